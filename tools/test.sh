#!/usr/bin/env bash
# The whole test suite: the notebooks' fast cells (nbdev_test), then pytest. Also checks that
# the notebooks and the exported package agree.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
# one torch thread per process: the suite runs notebooks and launches in parallel on a 2-core machine
export PATH="$PWD/$BIN:$PATH" MPLBACKEND=Agg HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "== nbdev_export leaves jodiff/ unchanged"
before=$(git status --porcelain -- jodiff | sort; git diff -- jodiff | sha256sum)
nbdev_export
after=$(git status --porcelain -- jodiff | sort; git diff -- jodiff | sha256sum)
if [ "$before" != "$after" ]; then
  echo "nbdev_export changed jodiff/: the notebooks and the package are out of sync"; git diff --stat -- jodiff; exit 1
fi

echo "== the import contracts hold (pyproject.toml: shared layer, methods, no cycles)"
lint-imports --no-logo

echo "== README.md is generated from nbs/index.ipynb"
python tools/readme.py --check

echo "== nbdev_test (fast cells; slow and cuda cells are skipped)"
nbdev_test --n_workers 2 --timing

echo "== pytest"
python -m pytest -q tests "$@"
