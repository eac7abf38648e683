"Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which is not always at hand)."
import sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parents[1]
nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith('#| hide')]
body, _ = MarkdownExporter().from_notebook_node(nb)
out = "<!-- WARNING: generated from nbs/index.ipynb by tools/readme.py; edit the notebook, not this file -->\n\n" + body.strip() + "\n"
if '--check' in sys.argv:
    sys.exit(0 if (root/'README.md').read_text() == out else 'README.md is out of date: run tools/readme.py')
(root/'README.md').write_text(out)
