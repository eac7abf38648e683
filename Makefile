# The two commands of the README:
#   make run    install everything, then run the main job on the embedded default data
#   make test   install everything, then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test export clean-nbs docs
install:
	bash tools/install.sh

run: install
	$(BIN)/jodiff recipe --data shapes --out runs/recipe

test: install
	bash tools/test.sh

export:
	$(BIN)/nbdev_export

clean-nbs:
	$(BIN)/nbdev_clean

docs:
	$(BIN)/jupyter nbconvert --to html --output-dir _docs nbs/*.ipynb
