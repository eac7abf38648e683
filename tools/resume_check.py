"""Segmenter resume, before/after: uninterrupted run vs a run interrupted (SIGINT, or SIGKILL) after its iter_K checkpoint
and rerun; prints the largest weight difference of the final checkpoints.  usage: python tools/resume_check.py REPO SIGINT|SIGKILL OUT (REPO: a checkout with its .venv)"""
import os, signal, subprocess, sys, time, torch, shutil
from pathlib import Path
repo, sig, out = Path(sys.argv[1]), getattr(signal, sys.argv[2]), Path(sys.argv[3])
shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
J = str(repo / '.venv/bin/jodiff')
ARGS = ['segment', 'train', '--model', 'deeplabv3-r18-tiny', '--train', 'shapes:train?n=16&size=32', '--iters', '40',
        '--batch-size', '2', '--crop', '32']
env = dict(os.environ, OMP_NUM_THREADS='1')
def sd(w): return torch.load(w / 'iter_40.pth', map_location='cpu', weights_only=False)['state_dict']
def diff(a, b): return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
runs = {}
for name in ('a', 'b'):
    t = time.time(); subprocess.run([J, *ARGS, '--work-dir', str(out / name)], env=env, cwd=repo, check=True, capture_output=True)
    runs[name] = sd(out / name); print(name, 'uninterrupted', round(time.time() - t, 1), 's', flush=True)
w = out / 'killed'
p = subprocess.Popen([J, *ARGS, '--work-dir', str(w)], env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
while not (w / 'iter_20.pth').exists() and p.poll() is None: time.sleep(0.01)
time.sleep(0.5); p.send_signal(sig); p.wait()
print('interrupted, rc', p.returncode, 'files', sorted(x.name for x in w.glob('iter_*.pth')), flush=True)
r = subprocess.run([J, *ARGS, '--work-dir', str(w)], env=env, cwd=repo, capture_output=True, text=True)
print('rerun rc', r.returncode, r.stderr[-300:] if r.returncode else '')
print(f"two uninterrupted runs: largest difference {diff(runs['a'], runs['b'])}")
print(f"interrupted+resumed vs uninterrupted: largest difference {diff(sd(w), runs['a'])}")
