"""Optimizers by name and learning-rate schedules (cyclic, one-cycle, cosine with warmup), any Keras backend."""

import math

import keras
import numpy as np
from keras import ops

from lib.choices import OPTIMIZERS, SCHEDULES

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def make_optimizer(
    name: str, learning_rate, weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = True, **kw
) -> keras.optimizers.Optimizer:
    """An optimizer by name; `learning_rate` may be a float or a LearningRateSchedule.

    Extra keywords (clipnorm, gradient_accumulation_steps, ...) go to the Keras optimizer.
    For adam and sgd, weight_decay=0 means none (Keras' decoupled decay is skipped entirely).
    """
    key = name.lower()
    if key == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None, **kw)
    if key == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **kw)
    if key == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay or None, **kw
        )
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


@keras.saving.register_keras_serializable(package="lib")
class CyclicLR(keras.optimizers.schedules.LearningRateSchedule):
    """Cyclical learning rate (Smith 2017, arXiv:1506.01186): triangular, triangular2 or exp_range.

    cycle = floor(1 + step / (2 step_size)); x = |step / step_size - 2 cycle + 1|;
    lr = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale, where scale is 1 (triangular),
    1 / 2**(cycle - 1) (triangular2) or gamma**step (exp_range).
    """

    def __init__(self, base_lr, max_lr, step_size, mode="triangular", gamma=1.0, name="CyclicLR"):
        super().__init__()
        if mode not in CYCLIC_MODES:
            raise ValueError(f"unknown cyclic mode {mode!r}: use one of {', '.join(CYCLIC_MODES)}")
        if step_size <= 0:
            raise ValueError(f"cyclic step_size must be > 0, got {step_size}")
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.step_size = int(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        cycle = ops.floor(1.0 + step / (2.0 * self.step_size))
        x = ops.abs(step / self.step_size - 2.0 * cycle + 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = ops.power(2.0, 1.0 - cycle)
        else:
            scale = ops.power(self.gamma, step)
        return self.base_lr + (self.max_lr - self.base_lr) * ops.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="lib")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle LR with cosine annealing, as PyTorch's OneCycleLR (two phases, three_phase=False).

    Warms from max_lr / div_factor to max_lr over steps [0, pct_start * total_steps - 1], then anneals to
    max_lr / div_factor / final_div_factor at step total_steps - 1; later steps stay at that minimum.
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, name="OneCycle"):
        super().__init__()
        if total_steps < 2:
            raise ValueError(f"one-cycle total_steps must be >= 2, got {total_steps}")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"one-cycle pct_start must be in (0, 1), got {pct_start}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    @staticmethod
    def _cos_anneal(start, end, pct):
        # (cos(pi p) + 1) / 2 written as cos(pi p / 2)**2: same value, no float32 cancellation near p = 1
        return end + (start - end) * ops.square(ops.cos(math.pi / 2.0 * pct))

    def __call__(self, step):
        initial_lr = self.max_lr / self.div_factor
        min_lr = initial_lr / self.final_div_factor
        warm_end = float(self.pct_start * self.total_steps) - 1.0  # same phase boundary as PyTorch
        last = float(self.total_steps - 1)
        step = ops.minimum(ops.cast(step, "float32"), last)
        warm_pct = ops.clip(step / max(warm_end, 1e-12), 0.0, 1.0)
        anneal_pct = ops.clip((step - warm_end) / (last - warm_end), 0.0, 1.0)
        return ops.where(
            step <= warm_end,
            self._cos_anneal(initial_lr, self.max_lr, warm_pct),
            self._cos_anneal(self.max_lr, min_lr, anneal_pct),
        )

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }


def make_schedule(name: str, lr: float, steps_per_epoch: int, epochs: int, **options):
    """A learning-rate schedule for one training stage, or a float for `constant` / `plateau`.

    `plateau` gives the float `lr`; the caller adds keras.callbacks.ReduceLROnPlateau.
    Options: cosine: warmup_epochs (0), min_lr_ratio (0.0), warmup_start_ratio (0.0);
    onecycle: pct_start (0.3), div_factor (25), final_div_factor (1e4), `lr` is the peak;
    cyclic: mode (triangular), base_lr or base_ratio (0.1, base_lr = lr * base_ratio), step_epochs (2) or
    step_size (steps, overrides step_epochs), gamma (0.99994), `lr` is the peak.
    """
    key = name.lower()
    total_steps = max(1, int(steps_per_epoch) * int(epochs))
    known = {
        "constant": set(),
        "plateau": set(),
        "cosine": {"warmup_epochs", "min_lr_ratio", "warmup_start_ratio"},
        "onecycle": {"pct_start", "div_factor", "final_div_factor"},
        "cyclic": {"mode", "base_lr", "base_ratio", "step_epochs", "step_size", "gamma"},
    }
    if key not in known:
        raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")
    unknown = set(options) - known[key]
    if unknown:
        raise ValueError(
            f"schedule {key!r} does not take option(s) {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(sorted(known[key])) or 'none'}"
        )
    if key in ("constant", "plateau"):
        return float(lr)
    if key == "cosine":
        warmup_steps = int(round(options.get("warmup_epochs", 0) * steps_per_epoch))
        alpha = float(options.get("min_lr_ratio", 0.0))
        if warmup_steps <= 0:
            return keras.optimizers.schedules.CosineDecay(float(lr), total_steps, alpha=alpha)
        return keras.optimizers.schedules.CosineDecay(
            float(lr) * float(options.get("warmup_start_ratio", 0.0)),
            max(1, total_steps - warmup_steps),
            alpha=alpha,
            warmup_target=float(lr),
            warmup_steps=warmup_steps,
        )
    if key == "onecycle":
        return OneCycle(
            lr,
            max(2, total_steps),
            pct_start=options.get("pct_start", 0.3),
            div_factor=options.get("div_factor", 25.0),
            final_div_factor=options.get("final_div_factor", 1e4),
        )
    base_lr = options.get("base_lr")
    if base_lr is None:
        base_lr = lr * options.get("base_ratio", 0.1)
    step_size = options.get("step_size")
    if step_size is None:
        step_size = max(1, int(round(options.get("step_epochs", 2) * steps_per_epoch)))
    return CyclicLR(base_lr, lr, step_size, mode=options.get("mode", "triangular"), gamma=options.get("gamma", 0.99994))


def lr_curve(schedule, total_steps: int) -> np.ndarray:
    """The learning rate at optimizer steps 0..total_steps-1 (float64); a float gives a flat line."""
    total_steps = int(total_steps)
    if not callable(schedule):
        return np.full(total_steps, float(schedule))
    steps = np.arange(total_steps)
    try:  # one vectorised call where the schedule allows it (ours do; CosineDecay's ops.cond does not)
        values = np.asarray(ops.convert_to_numpy(schedule(ops.convert_to_tensor(steps, "int32"))), dtype=np.float64)
        if values.shape == (total_steps,):
            return values
    except Exception:  # noqa: BLE001 - any failure means "not vectorisable"; fall back to one step at a time
        pass
    return np.array([float(ops.convert_to_numpy(schedule(int(s)))) for s in steps])
