"The `jodiff` command as a user runs it: a subprocess of the installed console script."
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
JODIFF = [sys.executable, '-m', 'jodiff.cli']

def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
    r = subprocess.run(JODIFF + list(args), capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if check and r.returncode != 0: raise AssertionError(f"jodiff {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_help_lists_every_command():
    out = run('--help').stdout
    for cmd in ['recipe', 'data', 'segment', 'generate', 'bench']: assert cmd in out

def test_data_stats_prints_frequencies():
    r = run('data', 'stats', 'shapes:val?n=6&size=32', '--json')
    freq = json.loads(r.stdout[r.stdout.index('{'):])
    assert 'background' in json.dumps(freq)

def test_unknown_spec_is_a_clear_error():
    r = run('data', 'stats', 'kitti:/nowhere:val', check=False)
    assert r.returncode == 2
    assert 'kitti' in r.stderr and 'error' in r.stderr

def test_bench_refine_small():
    r = run('bench', 'refine', '--size', '96', '--n', '2', '--tau', '10')
    assert 'speed' in r.stdout.lower()

def test_bench_generate_tiny():
    r = run('bench', 'generate', '--n', '4', '--batch-size', '2', '--steps', '2')
    assert 'pairs/s' in r.stdout and 'speed-up' in r.stdout

def test_console_script_exits_zero_on_success():
    "The installed `jodiff` script wraps main() in sys.exit(): a result returned by main would exit 1."
    script = Path(sys.executable).with_name('jodiff')
    assert script.is_file(), f"console script not installed beside {sys.executable}"
    r = subprocess.run([str(script), 'data', 'stats', 'shapes:val?n=4&size=32'], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
