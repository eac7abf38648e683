"""Fault-injection figures: `jodiff generate` (a test-only toy method) and `jodiff segment train` killed (SIGKILL) at
random points of a run into a new folder, each kill followed by a rerun; the folders / weights are compared with uninterrupted runs.

    .venv/bin/python tools/fault_stress.py [--kills 30] [--seg-kills 6] [--seed 0]

Prints: kills, samples lost, duplicated, corrupt (unreadable or different from the reference), folders identical;
for segmenters, the largest weight difference after resuming. The points are those of tests/faulty.py, plus `sample`
(the toy pipeline kills its process at its k-th call) and `extend` (a run growing a finished folder, killed while sampling).
"""
import argparse, os, random, shutil, signal, subprocess, sys, tempfile, zipfile
from pathlib import Path
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / 'tests'
sys.path.insert(0, str(TESTS))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get('PYTHONPATH', '')]))
LOCKS = ('.jodiff.lock', '.jodiff.lock.json')

def jodiff(args, fault=('none', 0), env=None):
    cmd = [sys.executable, str(TESTS / 'faulty.py'), fault[0], str(fault[1]), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True)

def files_of(d): return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob('*')) if p.is_file() and p.name not in LOCKS}

def gen(d, out, num): return ['generate', '--method', 'toy_method:ToyPipeline', '--model', d / 'model', '--prompts', d / 'prompts.txt',
                              '--num', num, '--out', out, '--batch-size', 2, '--steps', 2, '--quiet']

def readable(p):
    try: Image.open(p).load(); return True
    except Exception: return False

def generate_stress(d, kills, rng):
    from jodiff.data import MASK_DIR, IMAGE_DIR, load_dataset
    ref, out, n_killed, points = d / 'reference', d / 'killed', 0, {}
    assert jodiff(gen(d, ref, 16)).returncode == 0
    while n_killed < kills:
        point = rng.choice(['sample', 'torn', 'rename', 'metadata', 'extend'])
        n = rng.randint(1, 2 if point == 'metadata' else 8)
        if out.exists(): shutil.rmtree(out)   # each kill hits a run from scratch (the rerun then finishes it)
        if point == 'extend':   # a finished folder of 8 grown to 16, killed while sampling
            assert jodiff(gen(d, out, 8)).returncode == 0
            r = jodiff(gen(d, out, 16), env=dict(ENV, JODIFF_TOY_KILL_AT=str(rng.randint(1, 4))))
        elif point == 'sample': r = jodiff(gen(d, out, 16), env=dict(ENV, JODIFF_TOY_KILL_AT=str(n)))
        else: r = jodiff(gen(d, out, 16), fault=(point, n))
        if r.returncode == -signal.SIGKILL:
            n_killed += 1; points[point] = points.get(point, 0) + 1
            if point == 'extend':   # the half-grown folder must refuse to load
                try: load_dataset(f'folder:{out}'); raise SystemExit('an interrupted extension loaded without a word')
                except ValueError: pass
        elif r.returncode != 0: raise SystemExit(r.stderr[-2000:])
        rr = jodiff(gen(d, out, 16))                                 # the rerun
        if rr.returncode != 0: raise SystemExit(f'rerun after a kill at {point} failed: {rr.stderr[-1500:]}')
        got, want = files_of(out), files_of(ref)
        names = sorted(p.stem for p in (out / MASK_DIR).iterdir())
        yield dict(point=point, killed=r.returncode == -signal.SIGKILL, lost=len(set(f'{i:07d}' for i in range(16)) - set(names)),
                   duplicated=len(names) - len(set(names)) + len([k for k in got if k.endswith('.tmp')]),
                   corrupt=sum(not readable(out / k) or got[k] != want.get(k) for k in got if k.endswith('.png') or k.endswith('.jpg')),
                   identical=got == want, loads=len(load_dataset(f'folder:{out}')) == 16)

SEG = ['segment', 'train', '--model', 'deeplabv3-r18-tiny', '--train', 'shapes:train?n=8&size=32&level=easy', '--iters', 8,
       '--batch-size', 2, '--crop', 32, '--quiet']

def seg_stress(d, kills, rng):
    w = lambda p: torch.load(p / 'iter_8.pth', map_location='cpu', weights_only=False)['state_dict']
    assert jodiff([*SEG, '--work-dir', d / 'seg_ref']).returncode == 0
    ref = w(d / 'seg_ref')
    for k in range(kills):
        work = d / f'seg{k}'
        n = rng.randint(1, 7)              # the n-th checkpoint or pointer write (4 checkpoints, each with its pointer)
        r = jodiff([*SEG, '--work-dir', work], fault=('save', n))
        torn = [p.name for p in work.glob('iter_*.pth') if not zipfile.is_zipfile(p)]
        assert jodiff([*SEG, '--work-dir', work]).returncode == 0
        got = w(work)
        yield dict(n=n, killed=r.returncode == -signal.SIGKILL, torn=len(torn), diff=max((got[q].float() - ref[q].float()).abs().max().item() for q in ref))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--kills', type=int, default=30); ap.add_argument('--seg-kills', type=int, default=6); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    from toy_method import TOY_SPACE, ToyPipeline
    from jodiff.generation import save_label_space
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as t:
        d = Path(t)
        ToyPipeline.tiny().save_pretrained(d / 'model'); save_label_space(d / 'model', TOY_SPACE)
        (d / 'prompts.txt').write_text('a red circle\na blue square\ntwo stars on grass\n')
        rows = list(generate_stress(d, a.kills, rng))
        k = [r for r in rows if r['killed']]
        by = {p: sum(r['point'] == p for r in k) for p in ('sample', 'torn', 'rename', 'metadata', 'extend')}
        print(f"generate: {len(rows)} runs, {len(k)} killed {by}; after the reruns: lost {sum(r['lost'] for r in rows)}, "
              f"duplicated {sum(r['duplicated'] for r in rows)}, corrupt {sum(r['corrupt'] for r in rows)}, "
              f"folders identical to the uninterrupted run {sum(r['identical'] for r in rows)}/{len(rows)}, loading {sum(r['loads'] for r in rows)}/{len(rows)}")
        s = list(seg_stress(d, a.seg_kills, rng))
        print(f"segment train: {len(s)} runs, {sum(r['killed'] for r in s)} killed during a checkpoint or pointer save; torn checkpoints "
              f"left under a real name {sum(r['torn'] for r in s)}; largest weight difference after resuming {max(r['diff'] for r in s)}")

if __name__ == '__main__': main()
