"""Augmentation presets: albumentations on the CPU (per image) and Keras preprocessing layers in the model."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

PRESETS = ("none", "light", "medium", "heavy")

# Reflected borders look like a plausible street scene; black wedges would be a learnable artefact.
_BORDER = cv2.BORDER_REFLECT_101


def _check(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}: use one of {', '.join(PRESETS)}")
    return name


def albumentations_transforms(name: str) -> list:
    """The albumentations transforms of a preset (size-preserving: applied after the resize to the model size)."""
    _check(name)
    if name == "none":
        return []
    if name == "light":
        return [
            A.HorizontalFlip(p=0.5),
            A.Affine(translate_percent=(-0.05, 0.05), scale=(0.95, 1.05), rotate=(-5, 5),
                     border_mode=_BORDER, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
        ]
    if name == "medium":
        # Roughly the seed's ImageDataGenerator (rotation 20, shift 0.1, zoom 0.1, flip) plus photometric jitter.
        return [
            A.HorizontalFlip(p=0.5),
            # p=0.5 keeps the warp (the costliest step, about half a JPEG decode at 299 px) off every other image.
            A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-15, 15),
                     border_mode=_BORDER, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.3),
            # No GaussNoise here: full-resolution noise costs more than the decode; blur is cheap.
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.MotionBlur(blur_limit=(3, 5), p=1.0)], p=0.2),
        ]
    return [  # heavy
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.15, 0.15), scale=(0.8, 1.2), rotate=(-20, 20), shear=(-8, 8),
                 border_mode=_BORDER, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
        A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=25, val_shift_limit=15, p=0.5),
        A.OneOf([A.RandomGamma(gamma_limit=(70, 130), p=1.0), A.CLAHE(clip_limit=2.0, p=1.0)], p=0.3),
        A.ToGray(p=0.05),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 7), p=1.0),
            A.MotionBlur(blur_limit=(3, 7), p=1.0),
            A.GaussNoise(std_range=(0.03, 0.1), noise_scale_factor=0.5, p=1.0),
            A.ImageCompression(quality_range=(40, 90), p=1.0),
        ], p=0.4),
        A.CoarseDropout(num_holes_range=(1, 6), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                        fill=0, p=0.5),
    ]


def albumentations_preset(name: str, seed: int | None = None) -> A.Compose | None:
    """An A.Compose for the preset, or None for 'none' (the caller skips augmentation entirely)."""
    transforms = albumentations_transforms(name)
    if not transforms:
        return None
    return A.Compose(transforms, seed=seed)


def keras_augmentation(name: str, seed: int | None = None):
    """A keras.Sequential of preprocessing layers for the preset (run inside the model, on the accelerator),
    or None for 'none'. Expects float input in 0-255 (uint8 batches cast to float); active only in training."""
    import keras

    _check(name)
    if name == "none":
        return None
    layers = keras.layers
    if name == "light":
        stack = [layers.RandomFlip("horizontal", seed=seed),
                 layers.RandomRotation(0.015, fill_mode="reflect", seed=seed),
                 layers.RandomZoom(0.05, fill_mode="reflect", seed=seed)]
    elif name == "medium":
        stack = [layers.RandomFlip("horizontal", seed=seed),
                 layers.RandomRotation(0.04, fill_mode="reflect", seed=seed),  # fraction of 2*pi: about 15 degrees
                 layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
                 layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
                 layers.RandomContrast(0.2, value_range=(0, 255), seed=seed)]
    else:
        stack = [layers.RandomFlip("horizontal", seed=seed),
                 layers.RandomRotation(0.055, fill_mode="reflect", seed=seed),
                 layers.RandomZoom(0.2, fill_mode="reflect", seed=seed),
                 layers.RandomTranslation(0.15, 0.15, fill_mode="reflect", seed=seed),
                 layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
                 layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed)]
    return keras.Sequential(stack, name=f"augment_{name}")
