"A test-only generation method that is not JoDiffusion: seeded noise run through a diffusers scheduler, no network."
import os, signal, time
from dataclasses import dataclass
import numpy as np
import torch
from scipy import ndimage
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from jodiff.core import LabelSpace

TOY_SPACE = LabelSpace('toy', ['background', 'warm', 'cold'], background=0)

@dataclass
class ToyOutput(BaseOutput):
    images: np.ndarray
    masks: np.ndarray
    seeds: list
    raw_masks: np.ndarray
    scores: list

class ToyPipeline(DiffusionPipeline):
    "Images from seeded noise denoised towards zero; the mask says where red or blue dominates; median-filtered."
    def __init__(self, scheduler):
        super().__init__()
        self.register_modules(scheduler=scheduler)

    @classmethod
    def tiny(cls, seed: int = 0): return cls(DDIMScheduler(num_train_timesteps=100))

    num_classes = 3

    calls = 0

    def check_options(self, num_inference_steps, size, delay, **_):
        if num_inference_steps < 1: raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if size % 8: raise ValueError(f"size must be a multiple of 8, got {size}")

    def __call__(self, prompt, seeds, num_inference_steps: int = 3, size: int = 32, delay: float = 0.0, label_space=None):
        ToyPipeline.calls += 1   # JODIFF_TOY_KILL_AT=k: the k-th call of this process kills it (tests/test_faults.py)
        if ToyPipeline.calls == int(os.environ.get('JODIFF_TOY_KILL_AT', 0)): os.kill(os.getpid(), signal.SIGKILL)
        self.scheduler.set_timesteps(num_inference_steps)
        images, raws = [], []
        for p, s in zip(prompt, seeds):
            x = torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(s))) + 0.01 * len(p)
            for t in self.scheduler.timesteps: x = self.scheduler.step(0.3 * x, t, x).prev_sample
            images.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
            raws.append(np.where(x[0] > x[2] + 0.3, 1, np.where(x[2] > x[0] + 0.3, 2, 0)).astype(np.uint8))
        time.sleep(delay * len(prompt))
        masks = np.stack([ndimage.median_filter(r, 3) for r in raws])
        return ToyOutput(np.stack(images), masks, list(seeds), np.stack(raws), [dict(warm=float((m == 1).mean())) for m in masks])
