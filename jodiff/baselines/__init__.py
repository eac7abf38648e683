"""The Image2Mask baselines: masks read from a text-to-image model's attention.

`dataset_diffusion.read_masks` (Dataset Diffusion: A_s^4 A_c with an ignore band) and `diffumask.read_masks`
(DiffuMask: multi-resolution cross-attention against a background level) are built (`nbs/30_dataset_diffusion`,
`nbs/31_diffumask`); the text-to-image host, the attention capture and the generation pipelines that feed them are
not built yet.
"""
