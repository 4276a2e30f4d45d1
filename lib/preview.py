"""Augmented copies of a few photos, and photos mixed by CutMix and MixUp, for the augmentation preview notebook."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib import class_display_name
from lib.images import read_resized


def albumentations_samples(photos: pd.DataFrame, preset: str, image_size: int, copies: int, seed: int = 0):
    """Per photo (a row with `path` and `Category`): the original, titled with its class, then `copies` draws of
    the pipeline's augmentation (the same code training runs)."""
    from lib.pipeline import ImageSequence

    images, titles = [], []
    for path, category in zip(photos["path"], photos["Category"]):
        images.append(read_resized(path, image_size))
        titles.append(class_display_name(category))
        for copy in range(copies):
            sequence = ImageSequence(
                [path], [0], image_size=image_size, batch_size=1, augment=preset, seed=seed + copy, workers=1
            )
            images.append(sequence[0][0][0])
            titles.append(f"{preset} #{copy + 1}")
    return images, titles


def keras_layer_samples(photos: pd.DataFrame, preset: str, image_size: int, copies: int, seed: int = 0):
    """Per photo (a row with `path` and `Category`): the original, titled with its class, then `copies` outputs of
    the Keras preprocessing layers in training mode."""
    import keras

    from lib.augment import keras_augmentation

    layers = keras_augmentation(preset, seed=seed)
    images, titles = [], []
    for path, category in zip(photos["path"], photos["Category"]):
        original = read_resized(path, image_size)
        images.append(original)
        titles.append(class_display_name(category))
        batch = np.repeat(original[None].astype("float32"), copies, axis=0)
        augmented = keras.ops.convert_to_numpy(layers(batch, training=True))
        images.extend(np.clip(augmented, 0, 255).astype(np.uint8))
        titles.extend(f"keras {preset} #{i + 1}" for i in range(copies))
    return images, titles


def label_mix(label: np.ndarray, shown: int = 2) -> str:
    """A soft label as its largest shares, one line each: "0.62 0 Lada Priora" (shares under 0.005 left out)."""
    order = np.argsort(-label)[:shown]
    return "\n".join(f"{label[c]:.2f} {class_display_name(c)}" for c in order if label[c] >= 0.005)


def mixed_samples(photos: pd.DataFrame, kind: str, alpha: float, image_size: int, seed: int = 0):
    """The photos (rows with `path` and `Category`) as one training batch mixed by `kind` ("cutmix" or "mixup",
    with its Beta alpha) through the pipeline's own mixing (lib.augment.BatchMixer), every batch mixed: first the
    photos, titled with their class, then the mixed batch, each titled with its label mix."""
    from lib.choices import Mix
    from lib.pipeline import ImageSequence

    mix = Mix(cutmix=alpha) if kind == "cutmix" else Mix(mixup=alpha)
    common = dict(image_size=image_size, batch_size=len(photos), seed=seed, workers=1)
    paths, labels = photos["path"].tolist(), photos["Category"].to_numpy()
    originals = ImageSequence(paths, labels, **common)[0][0]
    mixed, mixed_labels = ImageSequence(paths, labels, mix=mix, **common)[0]
    titles = [class_display_name(c) for c in labels] + [label_mix(label) for label in mixed_labels]
    return [*originals, *mixed], titles
