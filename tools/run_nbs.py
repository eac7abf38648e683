"""Refresh the committed outputs of notebooks: run every cell that `nbdev_test` runs and store its outputs.

    .venv/bin/python tools/run_nbs.py nbs/22_pipeline.ipynb [more.ipynb ...] [--flags slow]

tqdm's "IProgress not found" notice on stderr is dropped. Cells flagged `#| slow` or `#| cuda` keep the outputs they have (their runs are expensive; pass
`--flags slow` to rerun the slow ones too). Runs in the notebook's folder, as nbdev_test does, with
one torch thread and MPLBACKEND=Agg. Stops at the first failing cell and leaves that notebook unchanged.
"""
import os, sys, time
from pathlib import Path
os.environ.setdefault('MPLBACKEND', 'Agg'); os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.process import extract_directives

def _noise(o) -> bool:
    "tqdm's notice that ipywidgets is missing (it then draws text bars): environment noise, not the notebook's output."
    return o.get('name') == 'stderr' and 'IProgress not found' in ''.join(o.get('text', ''))

def run(path: Path, flags: set) -> float:
    nb = read_nb(path)
    def skip(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export(' in cell.source: return True
        d = extract_directives(cell, remove=False)
        if d.get('eval:', [''])[0].lower() == 'false': return True
        if {'slow', 'cuda'} - flags & d.keys(): return True
        cell.outputs = []   # execnb leaves a cell's old outputs in place when the new run prints nothing
        return False
    t = time.time()
    sh = CaptureShell(path)
    with working_directory(path.parent): sh.run_all(nb, exc_stop=True, preproc=skip)
    for c in nb.cells:
        if c.cell_type == 'code':
            c.execution_count = None
            c.outputs = [o for o in c.get('outputs', []) if not _noise(o)]
        for o in c.get('outputs', []):
            if 'execution_count' in o: o['execution_count'] = None
    write_nb(nb, path)
    return time.time() - t

if __name__ == '__main__':
    args = sys.argv[1:]
    flags = set()
    if '--flags' in args:
        i = args.index('--flags'); flags = set(args[i + 1].split()); del args[i:i + 2]
    for a in args: print(f"{a}: {run(Path(a).resolve(), flags):.0f} s", flush=True)
