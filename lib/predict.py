"""Prediction with test-time augmentation: decode each batch once, average the probabilities of every pass."""

from __future__ import annotations

import importlib.util
import sys

import cv2
import keras
import numpy as np

from lib import NUM_CLASSES
from lib.choices import TTA_TRANSFORMS


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


class TTABatches(keras.utils.PyDataset):
    """Every TTA pass of every batch of `sequence`, the passes of one batch in a row: each batch is decoded once,
    and padded to the full batch size, so a compiled model sees one shape and each replica gets an equal share."""

    def __init__(self, sequence, plan: list[tuple[str, float]]):
        super().__init__()  # no workers: batches are read in order, so the one cached batch is always the next
        self.sequence, self.plan = sequence, plan
        self.counts: dict[int, int] = {}  # real rows per batch, before padding
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.sequence) * len(self.plan)

    def _batch(self, index: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != index:
            batch = self.sequence[index]
            batch = batch[0] if isinstance(batch, tuple) else batch
            self.counts[index] = count = len(batch)
            full = getattr(self.sequence, "batch_size", count)
            if count < full:
                batch = np.concatenate([batch, np.repeat(batch[-1:], full - count, axis=0)])
            self._cached = (index, batch)
        return self._cached[1]

    def __getitem__(self, index: int):
        batch_index, pass_index = divmod(index, len(self.plan))
        name, strength = self.plan[pass_index]
        return tta_variant(self._batch(batch_index), name, strength)


class _ProgressBar(keras.callbacks.Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update(1)


def predict_probs(
    model: keras.Model, sequence, tta: list[str] = ("identity",), passes: int | None = None, progress: bool = True
) -> np.ndarray:
    """Class probabilities [N, 10] averaged over the TTA passes. `sequence` yields x (uint8) batches.

    Runs through `model.predict`, so a distribution strategy splits every batch across its replicas
    (`predict_on_batch` under tf.distribute gives each replica the whole batch).
    """
    if importlib.util.find_spec("ipywidgets"):  # tqdm.auto's widget; without ipywidgets it warns
        from tqdm.auto import tqdm
    else:  # and falls back to this text bar anyway (TqdmWarning: IProgress not found)
        from tqdm import tqdm

    plan = tta_plan(list(tta), passes)
    if len(sequence) == 0:
        return np.zeros((0, NUM_CLASSES))
    batches = TTABatches(sequence, plan)
    desc = f"Predicting ({len(plan)} TTA pass{'es' * (len(plan) > 1)})"
    with tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress, file=sys.stdout, mininterval=2) as bar:
        outputs = model.predict(batches, verbose=0, callbacks=[_ProgressBar(bar)])
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(sequence), len(plan), -1, NUM_CLASSES)
    probs = outputs.sum(axis=1) / len(plan)
    return np.concatenate([probs[index, : batches.counts[index]] for index in range(len(sequence))])


def apply_fallback(probs: np.ndarray, readable: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Rows whose image could not be read get the training prior instead of a prediction on a blank image."""
    probs = np.array(probs, dtype=np.float64, copy=True)
    probs[~np.asarray(readable, dtype=bool)] = np.asarray(prior, dtype=np.float64)
    return probs


def class_prior(labels) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=NUM_CLASSES).astype(np.float64)
    return counts / counts.sum()
