"""LR range test (lr_find): exponentially growing LR over a few hundred batches, loss curve and suggested LR."""

import math
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from keras import ops

from lib.schedules import make_optimizer


@keras.saving.register_keras_serializable(package="lib")
class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = min_lr * (max_lr / min_lr) ** (step / (steps - 1)).

    A schedule, not a callback that sets optimizer.learning_rate: under JAX the jitted train step
    only sees the optimizer's own state, which a schedule is part of.
    """

    def __init__(self, min_lr, max_lr, steps, name="ExponentialRamp"):
        super().__init__()
        self.min_lr, self.max_lr, self.steps, self.name = float(min_lr), float(max_lr), int(steps), name

    def __call__(self, step):
        fraction = ops.cast(step, "float32") / max(self.steps - 1, 1)
        return self.min_lr * ops.exp(fraction * math.log(self.max_lr / self.min_lr))

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps, "name": self.name}


@dataclass
class LRFindResult:
    """`history` has one row per trained batch: step, lr, loss, smoothed_loss.

    `suggested_lr` is the LR where the smoothed loss falls fastest (steepest negative slope of smoothed loss
    against log10 LR), searched after the first 10 % of steps and before the minimum of the smoothed loss;
    `min_loss_lr` is the LR at that minimum (min_loss_lr / 10 is the other common rule). `diverged` says the
    test stopped early.
    """

    history: pd.DataFrame
    suggested_lr: float
    min_loss_lr: float
    diverged: bool


def _batches(data, batch_size, seed):
    """Endless (x, y) batches from a PyDataset (or any indexable of batches) or an (x, y) pair of arrays."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape"):
        x, y = data
        rng = np.random.default_rng(seed)
        batch_size = min(batch_size, len(x))
        while True:  # full batches only: one batch shape, one compiled train step
            order = rng.permutation(len(x))
            for start in range(0, len(x) - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                yield x[index], y[index]
    else:
        if len(data) == 0:
            raise ValueError("lr_range_test: the dataset has no batches")
        while True:
            for i in range(len(data)):
                batch = data[i]
                yield batch[0], batch[1]
            if hasattr(data, "on_epoch_end"):
                data.on_epoch_end()


def suggest_lr(lrs, smoothed, skip_start: float = 0.1) -> float:
    """The LR of steepest descent of the smoothed loss against log LR, between the first `skip_start`
    fraction of points (where the running average still rests on a few noisy batches) and the loss minimum."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    start = max(1, int(len(lrs) * skip_start)) if len(lrs) > 3 else 0
    end = int(np.argmin(smoothed[start:])) + start + 1
    if end - start < 3:  # too few points before the minimum for a slope
        return float(lrs[end - 1])
    slopes = np.gradient(smoothed[start:end], np.log10(lrs[start:end]))
    return float(lrs[start + int(np.argmin(slopes))])


def lr_range_test(
    model,
    data,
    *,
    loss,
    min_lr=1e-7,
    max_lr=1.0,
    steps=200,
    optimizer="adam",
    smoothing=0.98,
    divergence=4.0,
    batch_size=32,
    seed=0,
    **optimizer_options,
) -> LRFindResult:
    """Train `model` for up to `steps` batches with an exponentially growing LR and record the loss.

    `data` is a keras.utils.PyDataset yielding (x, y) batches or an (x, y) pair of arrays (batched by
    `batch_size`, shuffled with `seed`). Stops early when the bias-corrected smoothed loss exceeds
    `divergence` x its best value. The model is compiled with a fresh optimizer here and its weights
    are restored afterwards; compile it again before training.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"lr_range_test needs 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if steps < 2:
        raise ValueError(f"lr_range_test needs steps >= 2, got {steps}")
    ramp = ExponentialRamp(min_lr, max_lr, steps)
    saved = model.get_weights()
    model.compile(optimizer=make_optimizer(optimizer, ramp, **optimizer_options), loss=loss)
    rows, average, best, diverged = [], 0.0, math.inf, False
    try:
        batches = _batches(data, batch_size, seed)
        for step in range(steps):
            x, y = next(batches)
            lr = float(ops.convert_to_numpy(model.optimizer.learning_rate))  # what this step will use
            # train_on_batch resets the metrics first (Keras 3), so this is this batch's loss, not an epoch mean
            batch_loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            if not math.isfinite(batch_loss):
                diverged = True
                break
            average = smoothing * average + (1 - smoothing) * batch_loss
            smoothed = average / (1 - smoothing ** (step + 1))
            rows.append((step, lr, batch_loss, smoothed))
            best = min(best, smoothed)
            if step > 0 and smoothed > divergence * best:
                diverged = True
                break
    finally:
        model.set_weights(saved)
    if not rows:
        raise ValueError(
            f"lr_range_test: the loss was not finite at the first step (lr={min_lr:g}); "
            "lower min_lr or check the data and loss"
        )
    history = pd.DataFrame(rows, columns=["step", "lr", "loss", "smoothed_loss"])
    min_loss_lr = float(history["lr"].iloc[int(history["smoothed_loss"].to_numpy().argmin())])
    return LRFindResult(history, suggest_lr(history["lr"], history["smoothed_loss"]), min_loss_lr, diverged)


def plot_lr_find(result: LRFindResult, ax=None):
    """Smoothed loss against LR (log x), with the suggested LR marked; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    history = result.history
    ax.plot(history["lr"], history["loss"], color="0.8", linewidth=0.8, label="batch loss")
    ax.plot(history["lr"], history["smoothed_loss"], label="smoothed loss")
    ax.axvline(result.suggested_lr, color="tab:red", linestyle="--", label=f"suggested lr = {result.suggested_lr:.2g}")
    ax.set_xscale("log")
    top = float(history["smoothed_loss"].iloc[0]) * 1.5  # keep the divergence tail from flattening the plot
    ax.set_ylim(top=max(top, float(history["smoothed_loss"].min()) * 1.1))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title("LR range test")
    ax.legend()
    return ax
