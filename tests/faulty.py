"""Run the `jodiff` command with a fault injected, for tests/test_faults.py: this process kills itself (SIGKILL) at the
N-th time it reaches a chosen point.

    python tests/faulty.py POINT N jodiff-arguments...

POINT: `torn` (in the middle of writing a temporary file: half of it is on disk), `rename` (a temporary file is whole
but not yet renamed over its target), `metadata` (the same, for captions.jsonl / dataset.json / scores.jsonl), `save`
(the same, for a segmenter checkpoint or its last_checkpoint pointer), `none`.
"""
import os, signal, sys

point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = 0

def _maybe_die(where: str = ''):
    global calls
    calls += 1
    if calls == n: os.kill(os.getpid(), signal.SIGKILL)

_fsync, _replace = os.fsync, os.replace

def fsync(fd):                       # atomic_write calls it once the temporary file holds everything
    if point == 'torn':
        global calls
        if calls + 1 == n: os.ftruncate(fd, max(0, os.fstat(fd).st_size // 2))
        _maybe_die()
    return _fsync(fd)

def replace(src, dst, *a, **k):
    name = os.path.basename(str(dst))
    if point == 'rename' or (point == 'metadata' and name in ('captions.jsonl', 'dataset.json', 'scores.jsonl')) \
       or (point == 'save' and (name.endswith('.pth') or name == 'last_checkpoint')):
        _maybe_die()
    return _replace(src, dst, *a, **k)

os.fsync, os.replace = fsync, replace
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the toy method
from jodiff.cli import main
main(argv)
