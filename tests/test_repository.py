"Checks of the repository itself: committed outputs and result files hold no machine's absolute paths."
import json, re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSOLUTE = re.compile(r'(?:^|[\s"\'(=\[])/(?:[\w.-]+/){2,}|site-packages', re.M)  # a path three folders deep from /, or a venv's

def committed(*patterns):
    out = subprocess.run(['git', 'ls-files', *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.splitlines()]

def texts(o):
    "The text of a notebook output (streams, text results, errors), not its images."
    if isinstance(o, str): yield o
    elif isinstance(o, list): yield from (t for v in o for t in texts(v))
    elif isinstance(o, dict): yield from (t for k, v in o.items() if not k.startswith(('image/', 'application/')) for t in texts(v))

def test_no_absolute_paths_in_committed_notebook_outputs():
    hits = []
    for nb in committed('*.ipynb'):
        for i, c in enumerate(json.loads(nb.read_text()).get('cells', [])):
            for o in c.get('outputs', []):
                if m := ABSOLUTE.search('\n'.join(texts(o))): hits.append(f"{nb.relative_to(ROOT)} cell {i}: {m.group(0)!r}")
    assert not hits, '\n'.join(hits)

def test_no_absolute_paths_in_committed_result_files():
    hits = [f"{f.relative_to(ROOT)}: {m.group(0)!r}" for f in committed('experiments/results/*')
            if f.suffix in ('.json', '.md', '.csv', '.txt', '.jsonl') and (m := ABSOLUTE.search(f.read_text()))]
    assert not hits, '\n'.join(hits)

def test_no_warnings_on_stderr_in_committed_notebook_outputs():
    hits = [f"{nb.relative_to(ROOT)} cell {i}" for nb in committed('*.ipynb')
            for i, c in enumerate(json.loads(nb.read_text()).get('cells', []))
            for o in c.get('outputs', []) if o.get('name') == 'stderr' and 'Warning' in '\n'.join(texts(o))]
    assert not hits, '\n'.join(hits)

def test_docs_prerender_runs_no_cell_that_mixes_imports_and_code():
    "nbdev_proc_nbs (the docs' pre-render step) executes cells holding imports out of the notebook's state: a lesson cell must not mix them with code."
    import re
    imp = re.compile(r'^\s*(import [\w., ]+|from [\w.]+ import [\w., *()]+)\s*(#.*)?$')
    bad = []
    for p in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(p.read_text())['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or src.startswith(('#| export', '#| hide', '#| default_exp')) or 'nbdev_export()' in src: continue
            lines = [l for l in src.split('\n') if l.strip() and not l.lstrip().startswith('#')]
            if any(imp.match(l) for l in lines) and not all(imp.match(l) for l in lines): bad.append(f"{p.name} cell {i}")
    assert not bad, f"move these cells' imports to the notebook's hidden import cell: {bad}"
