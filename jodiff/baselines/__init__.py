"""The Image2Mask baselines: masks read from a text-to-image host's attention (`jodiff.text2image`, `jodiff.attention`).

`dataset_diffusion` (Dataset Diffusion: A_s^4 A_c of a read-out-only class prompt, with an ignore band; its pipeline
is registered as `jodiff generate --method dataset-diffusion`) and `diffumask` (DiffuMask: multi-resolution
cross-attention against a background level). The small host is trained by `jodiff.train_text2image`.
"""
