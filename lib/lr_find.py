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


class RepeatedFullBatches(keras.utils.PyDataset):
    """`steps` full (x, y) batches from a PyDataset (or any indexable of batches) or an (x, y) pair of arrays,
    going round again as often as needed (a shuffled sequence on its next epoch's order, arrays reshuffled).
    Full batches only: every step then weighs the same in Keras's running mean of the loss."""

    def __init__(self, data, steps: int, batch_size: int, seed: int):
        super().__init__()  # no workers: read in order, so set_epoch happens between rounds
        self.data, self.steps, self.seed = data, steps, seed
        self.arrays = isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape")
        if self.arrays:
            self.batch_size = min(batch_size, len(data[0]))
            self.per_round = len(data[0]) // self.batch_size
        else:
            if len(data) == 0:
                raise ValueError("lr_range_test: the dataset has no batches")
            full = getattr(data, "batch_size", None)
            last_is_full = full is None or len(data[len(data) - 1][0]) == full
            self.per_round = len(data) if last_is_full or len(data) == 1 else len(data) - 1

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        round_index, index = divmod(step, self.per_round)
        if self.arrays:
            x, y = self.data
            order = np.random.default_rng((self.seed, round_index)).permutation(len(x))
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            return x[rows], y[rows]
        if hasattr(self.data, "set_epoch") and getattr(self.data, "epoch", None) != round_index:
            self.data.set_epoch(round_index)
        batch = self.data[index]
        return batch[0], batch[1]


class BatchLosses(keras.callbacks.Callback):
    """Each step's own loss, recovered from Keras's running mean (equal batches: loss_k = k m_k - (k-1) m_(k-1));
    stops training when the bias-corrected smoothed loss passes `divergence` x its best or is not finite."""

    def __init__(self, lr_at, smoothing: float, divergence: float):
        super().__init__()
        self.lr_at, self.smoothing, self.divergence = lr_at, smoothing, divergence
        self.rows, self.diverged = [], False
        self._mean, self._average, self._best = 0.0, 0.0, math.inf

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        batch_loss = (batch + 1) * mean - batch * self._mean
        self._mean = mean
        if self.add(batch, batch_loss):
            self.model.stop_training = True

    def add(self, step: int, batch_loss: float) -> bool:
        """Record one step's loss; True when the test should stop (diverged)."""
        if not math.isfinite(batch_loss):
            self.diverged = True
            return True
        self._average = self.smoothing * self._average + (1 - self.smoothing) * batch_loss
        smoothed = self._average / (1 - self.smoothing ** (step + 1))
        self.rows.append((step, self.lr_at(step), batch_loss, smoothed))
        self._best = min(self._best, smoothed)
        self.diverged = step > 0 and smoothed > self.divergence * self._best
        return self.diverged


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
    replicas=1,
    **optimizer_options,
) -> LRFindResult:
    """Train `model` for up to `steps` batches with an exponentially growing LR and record the loss.

    `data` is a keras.utils.PyDataset yielding (x, y) batches or an (x, y) pair of arrays (batched by
    `batch_size`, shuffled with `seed`). Stops early when the bias-corrected smoothed loss exceeds
    `divergence` x its best value. The model is compiled with a fresh optimizer here and its weights
    are restored afterwards; compile it again before training.

    One device: a `train_on_batch` per step. Several `replicas` (a distribution strategy): `model.fit`, which splits
    each batch across them (`train_on_batch` under tf.distribute gives every replica the whole batch). Measured
    on the 2-core CPU: the demo's training epochs after a fit-based test took 55 s instead of 35 s after the
    train_on_batch one (and after no test at all, 55 s too); we did not find why, so one device keeps the loop.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"lr_range_test needs 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if steps < 2:
        raise ValueError(f"lr_range_test needs steps >= 2, got {steps}")
    ramp = ExponentialRamp(min_lr, max_lr, steps)
    saved = model.get_weights()
    # compile here, in the default distribution's scope; fit splits each batch across its replicas
    model.compile(optimizer=make_optimizer(optimizer, ramp, **optimizer_options), loss=loss)
    losses = BatchLosses(lambda step: float(ops.convert_to_numpy(ramp(step))), smoothing, divergence)
    batches = RepeatedFullBatches(data, steps, batch_size, seed)
    try:
        if replicas > 1:
            model.fit(batches, epochs=1, shuffle=False, verbose=0, callbacks=[losses])
        else:
            for step in range(steps):
                x, y = batches[step]
                # this batch's loss, not a running mean: Keras 3.15's train_on_batch resets the metrics, 3.8's does not
                model.reset_metrics()
                if losses.add(step, float(model.train_on_batch(x, y, return_dict=True)["loss"])):
                    break
    finally:
        model.set_weights(saved)
    rows, diverged = losses.rows, losses.diverged
    if not rows:
        raise ValueError(
            f"lr_range_test: the loss was not finite at the first step (lr={min_lr:g}); "
            "lower min_lr or check the data and loss"
        )
    history = pd.DataFrame(rows, columns=["step", "lr", "loss", "smoothed_loss"])
    min_loss_lr = float(history["lr"].iloc[int(history["smoothed_loss"].to_numpy().argmin())])
    return LRFindResult(history, suggest_lr(history["lr"], history["smoothed_loss"]), min_loss_lr, diverged)


def plot_lr_find(result: LRFindResult, ax=None, name: str = "lr_range_test"):
    """Smoothed loss against LR (log x), with the suggested LR marked; returns the axes. A figure it makes itself
    is also written into the run folder as `name`.png (lib.figures)."""
    import matplotlib.pyplot as plt

    from lib import figures

    own_figure = ax is None
    if own_figure:
        _, ax = plt.subplots(figsize=(6, 4))
    history = result.history
    ax.plot(history["lr"], history["loss"], color="0.8", linewidth=0.8, label="batch loss")
    ax.plot(history["lr"], history["smoothed_loss"], label="smoothed loss")
    ax.axvline(result.suggested_lr, color="tab:red", linestyle="--", label=f"suggested lr = {result.suggested_lr:.2g}")
    ax.set_xscale("log")
    # From just below the lowest loss measured to 1.5x the first smoothed one: the divergence tail runs off the top
    # instead of flattening the curve, and the axis never shows a cross-entropy below 0.
    lowest = float(min(history["loss"].min(), history["smoothed_loss"].min()))
    top = max(float(history["smoothed_loss"].iloc[0]) * 1.5, float(history["smoothed_loss"].min()) * 1.1)
    ax.set_ylim(bottom=max(0.0, lowest - 0.05 * (top - lowest)), top=top)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title("LR range test")
    ax.legend()
    if own_figure:
        figures.save(ax.figure, name)
    return ax
