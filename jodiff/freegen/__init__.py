"""FreeGen (planned, not built yet): attention-rectified Stable Diffusion masks and the entity-level grounding decoder.

The package exists so that the import contracts (pyproject.toml, `lint-imports`) already keep it apart from the
other methods; its notebooks will export into it.
"""
