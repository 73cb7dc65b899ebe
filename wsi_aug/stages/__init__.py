"""The pipeline's stages: one module each, holding its `Params`, its store reader and `run`.

`registry` lists them in order; `base` holds the contract they share.
"""
