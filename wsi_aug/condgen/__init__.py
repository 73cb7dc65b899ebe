"""A learned generator of new GAN conditions: (glomerulus mask, binary structure map) pairs.

A small denoising diffusion model of the joint two-channel binary condition at the GAN's patch
size (`diffusion`: cosine schedule, v-prediction, DDIM sampling; `unet`: the denoiser), trained
with the 8 dihedral symmetries as augmentation and EMA weights (`train`), saved as safetensors
(`checkpoints`), sampled deterministically per sample seed and cleaned up into binary conditions
(`sample`, `postprocess`), and measured against held-out real conditions (`stats`). It knows
nothing of stores or the CLI: the ``train-conditions`` / ``eval-conditions`` stages do.
"""
