"""Image2Mask baselines on shapes at tiny scale, seed 0: train the host (3000 steps, resumable), then Dataset Diffusion and
DiffuMask pairs (320, the recipe's tiny shapes settings) and a synthetic-only segmenter on each, scored on real val.
Run from the repository root: `OMP_NUM_THREADS=2 .venv/bin/python experiments/baselines_shapes.py` (about 20 minutes on 2 cores).
Writes experiments/results/baselines/shapes-tiny-seed0/ (results.json, host_samples.png, pairs_side_by_side.png); work in runs/."""
import json, os, sys, time
from pathlib import Path
import numpy as np
from jodiff.cli import run as cli
from jodiff.data import load_dataset
from jodiff.jodiffusion.recipe import RecipeConfig, _seg_kwargs
from jodiff.segment.train import train_segmenter
from jodiff.text2image import Text2ImagePipeline
from jodiff.viz import save_figure, show_pairs
from jodiff.generation import save_label_space
import matplotlib.pyplot as plt
from jodiff.train_text2image import train_text2image

cfg = RecipeConfig.preset('shapes', 'tiny')
work, res = Path('runs/baselines-shapes'), Path('experiments/results/baselines/shapes-tiny-seed0')
work.mkdir(parents=True, exist_ok=True); res.mkdir(parents=True, exist_ok=True)
host = Path('runs/host-shapes/pipeline')
train_text2image(cfg.train_spec, 'runs/host-shapes', steps=3000, batch_size=16, lr=2e-4, resolution=64, seed=0, checkpoint_every=1000)
t0 = time.time(); rec = dict(host=json.loads(Path('runs/host-shapes/train_log.json').read_text()))
rec['host'] = {k: v for k, v in rec['host'].items() if k != 'losses'} | dict(loss_last=float(np.mean(rec['host']['losses'][-100:])))
pipe = Text2ImagePipeline.from_pretrained(str(host)); pipe.set_progress_bar_config(disable=True)
caps = [load_dataset(cfg.train_spec)[i]['caption'] for i in range(8)]
out = pipe(caps, num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale, seeds=0)
fig, axs = plt.subplots(2, 8, figsize=(16, 4.6))
real = load_dataset(cfg.train_spec)
for j in range(8):
    axs[0, j].imshow(real[j]['image']); axs[1, j].imshow(out.images[j])
    axs[0, j].set_title(caps[j][:40], fontsize=6); [a.axis('off') for a in axs[:, j]]
axs[0, 0].text(-8, 32, 'real', rotation=90, va='center'); axs[1, 0].text(-8, 32, 'host', rotation=90, va='center')
save_figure(fig, res / 'host_samples.png')
for m in ('dataset-diffusion', 'diffumask'):
    d = work / m
    # the host folder, with the method's pipeline class and the shapes label space
    mdir = work / f'{m}-model'
    if not mdir.exists():
        from jodiff.generation import method_class
        cls = method_class(m); p = cls.from_pretrained(str(host)); p.save_pretrained(str(mdir)); save_label_space(mdir, 'shapes')
    t = time.time()
    cli(['generate', '--method', m, '--model', str(mdir), '--captions-from', cfg.train_spec, '--num', str(cfg.num), '--out', str(d),
         '--steps', str(cfg.num_inference_steps), '--guidance-scale', str(cfg.guidance_scale), '--batch-size', '16', '--quiet'])
    gen_s = time.time() - t
    t = time.time()
    r = train_segmenter(cfg.segmenter, f'folder:{d}', cfg.val_spec, cfg.seg_iters, work / f'seg-{m}', **_seg_kwargs(cfg))
    scores = [json.loads(l) for l in (d / 'scores.jsonl').read_text().splitlines()]
    rec[m] = dict(mIoU=r['metrics']['mIoU'], per_class=r['metrics']['per_class'], generate_s=round(gen_s, 1), seconds_per_pair=round(gen_s / cfg.num, 3),
                  seg_s=round(time.time() - t, 1), tff_mean=float(np.mean([s['tff'] for s in scores])),
                  ignored_share=float(np.mean([(np.asarray(load_dataset(f'folder:{d}')[i]['mask']) == 255).mean() for i in range(20)])))
    print(m, rec[m]['mIoU'], flush=True)
ds = {m: load_dataset(f'folder:{work / m}') for m in ('dataset-diffusion', 'diffumask')}
ims, mks, tit = [], [], []
for i in range(4):
    for m in ds: it = ds[m][i]; ims.append(it['image']); mks.append(it['mask']); tit.append(f"{m} {i}")
fig = show_pairs(ims, mks, 'shapes', titles=tit, ncols=4, captions=[c for c in caps[:4] for _ in range(2)])
save_figure(fig, res / 'pairs_side_by_side.png')
rec['load'] = os.getloadavg()[0]; rec['total_s'] = round(time.time() - t0, 1)
(res / 'results.json').write_text(json.dumps(rec, indent=1))
print(json.dumps({k: (v['mIoU'] if isinstance(v, dict) and 'mIoU' in v else v) for k, v in rec.items() if k != 'host'}))
