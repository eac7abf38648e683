"""The Image2Mask baselines (planned, not built yet): DiffuMask and Dataset Diffusion masks read from attention.

The package exists so that the import contracts (pyproject.toml, `lint-imports`) already keep it apart from the
other methods; its notebooks will export into it.
"""
