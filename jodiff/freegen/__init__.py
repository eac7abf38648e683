"""FreeGen (AAAI 2025): masks from the host's rectified attention (stage 1), then an entity-level grounding decoder (stage 2).

`rectify` (Attention Self-Rectification: W on the per-head self-attention, Υ on the entity keys, A* = A_s A_c),
`point_labels` (point-prompted pseudo-labels: GrabCut weight-free, SAM by checkpoint), `pipeline` (`FreeGenPipeline`,
registered as `jodiff generate --method freegen`, with ASR and decoder switches), `train` (stage 1: generate,
pseudo-label, TFF filter, ASR), `grounding` (the Entity-level Grounding Decoder), `self_training` (hardness-aware
self-training and stage 2), `commands` (`jodiff freegen stage1|stage2`).
"""
