"""wsi-aug: glomerulus patches from slides, multiplied with a mode-seeking Pix2Pix GAN."""

__version__ = "0.2.0"
