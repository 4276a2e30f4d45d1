"""Prediction with test-time augmentation: decode each batch once, average the probabilities of every pass."""

from __future__ import annotations

import sys

import cv2
import keras
import numpy as np

from lib import NUM_CLASSES

TTA_TRANSFORMS = ("identity", "hflip", "crop", "crop_hflip", "zoom_out", "brightness", "darkness")


def _center_crop(batch: np.ndarray, keep: float) -> np.ndarray:
    size = batch.shape[1]
    margin = int(round(size * (1 - keep) / 2))
    if margin == 0:
        return batch
    crop = batch[:, margin : size - margin, margin : size - margin]
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) for image in crop])


def _zoom_out(batch: np.ndarray, scale: float) -> np.ndarray:
    size = batch.shape[1]
    inner = int(round(size * scale))
    offset = (size - inner) // 2
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        small = cv2.resize(image, (inner, inner), interpolation=cv2.INTER_AREA)
        out[i] = cv2.copyMakeBorder(
            small, offset, size - inner - offset, offset, size - inner - offset, cv2.BORDER_REFLECT_101
        )
    return out


def tta_variant(batch: np.ndarray, name: str, strength: float = 1.0) -> np.ndarray:
    """One named transform of a uint8 batch [B, S, S, 3]; `strength` varies the repeated passes (0.5-1.5)."""
    if name == "identity":
        return batch
    if name == "hflip":
        return batch[:, :, ::-1]
    if name == "crop":
        return _center_crop(batch, 1 - 0.1 * strength)
    if name == "crop_hflip":
        return _center_crop(batch, 1 - 0.1 * strength)[:, :, ::-1]
    if name == "zoom_out":
        return _zoom_out(batch, 1 - 0.1 * strength)
    if name in ("brightness", "darkness"):
        factor = 1 + (0.1 if name == "brightness" else -0.1) * strength
        return np.clip(batch.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    raise ValueError(f"Unknown TTA transform {name!r}; choose from {TTA_TRANSFORMS}")


def tta_plan(tta: list[str], passes: int | None = None) -> list[tuple[str, float]]:
    """(transform, strength) per pass: the list in order, then again with other strengths, up to `passes`."""
    names = list(tta) or ["identity"]
    for name in names:
        if name not in TTA_TRANSFORMS:
            raise ValueError(f"Unknown TTA transform {name!r}; choose from {TTA_TRANSFORMS}")
    passes = passes or len(names)
    strengths = [1.0, 0.5, 1.5, 0.75, 1.25]
    return [(names[i % len(names)], strengths[(i // len(names)) % len(strengths)]) for i in range(passes)]


def predict_probs(
    model: keras.Model, sequence, tta: list[str] = ("identity",), passes: int | None = None, progress: bool = True
) -> np.ndarray:
    """Class probabilities [N, 10] averaged over the TTA passes. `sequence` yields x (uint8) batches;
    each batch is padded to the full batch size so a compiled model sees one shape only."""
    plan = tta_plan(list(tta), passes)
    outputs = []
    from tqdm.auto import tqdm

    batches = tqdm(
        range(len(sequence)),
        desc=f"Predicting ({len(plan)} TTA pass{'es' * (len(plan) > 1)})",
        unit="batch",
        disable=not progress,
        file=sys.stdout,
        mininterval=2,
    )
    for index in batches:
        batch = sequence[index]
        batch = batch[0] if isinstance(batch, tuple) else batch
        count = len(batch)
        full = getattr(sequence, "batch_size", count)
        if count < full:
            batch = np.concatenate([batch, np.repeat(batch[-1:], full - count, axis=0)])
        total = np.zeros((len(batch), NUM_CLASSES), dtype=np.float64)
        for name, strength in plan:
            total += keras.ops.convert_to_numpy(model.predict_on_batch(tta_variant(batch, name, strength)))
        outputs.append(total[:count] / len(plan))
    return np.concatenate(outputs) if outputs else np.zeros((0, NUM_CLASSES))


def apply_fallback(probs: np.ndarray, readable: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Rows whose image could not be read get the training prior instead of a prediction on a blank image."""
    probs = np.array(probs, dtype=np.float64, copy=True)
    probs[~np.asarray(readable, dtype=bool)] = np.asarray(prior, dtype=np.float64)
    return probs


def class_prior(labels) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=NUM_CLASSES).astype(np.float64)
    return counts / counts.sum()
