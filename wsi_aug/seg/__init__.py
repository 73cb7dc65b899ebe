"""The segmentation U-Net: architecture, augmentation, training and prediction."""

from wsi_aug.seg.augment import AugmentConfig, augment_batch, augment_pair
from wsi_aug.seg.train import TrainHistory, encoder_features, predict, train_unet
from wsi_aug.seg.unet import UNet, count_parameters, load_unet, save_unet

__all__ = [
    "AugmentConfig",
    "TrainHistory",
    "UNet",
    "augment_batch",
    "augment_pair",
    "count_parameters",
    "encoder_features",
    "load_unet",
    "predict",
    "save_unet",
    "train_unet",
]
