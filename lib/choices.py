"""Every setting with a fixed set of values, and the fields of a training stage: one home that imports no Keras."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from lib.backbones import BACKBONES as BACKBONE_TABLE  # the table's own module is as light as this one

PRESETS = ("none", "light", "medium", "heavy")  # augmentation: albumentations (augment) and Keras layers
BACKBONES = tuple(BACKBONE_TABLE)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "bfloat16", "float16")
STRATEGIES = ("auto", "none", "mirrored", "tpu", "data_parallel")  # `distribute`
LR_SCALINGS = ("none", "linear", "sqrt")
TTA_TRANSFORMS = ("identity", "hflip", "crop", "crop_hflip", "zoom_out", "brightness", "darkness")
BLEND_METHODS = ("arithmetic", "geometric")  # 05's `method`
SEARCHES = ("scipy", "simplex")  # 05's weight `search`
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "plateau", "cosine", "onecycle", "cyclic")

# A notebook parameter of this name takes its value (or, for a list, each item) from this set.
PARAMETER_CHOICES = {
    "augment": PRESETS,
    "keras_augment": PRESETS,
    "presets": PRESETS,
    "keras_presets": PRESETS,
    "backbone": BACKBONES,
    "precision": PRECISIONS,
    "distribute": STRATEGIES,
    "lr_scaling": LR_SCALINGS,
    "tta": TTA_TRANSFORMS,
    "method": BLEND_METHODS,
    "search": SEARCHES,
}
STAGE_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": PRESETS}
PREDICT_SIZE_AUTO = "auto"  # predict_image_size: try a few sizes on the validation split, keep the best


@dataclass(frozen=True)
class Mix:
    """A stage's CutMix and MixUp (keras.layers.CutMix, keras.layers.MixUp), applied to whole training batches in
    the input pipeline, timm's `Mixup` in spirit: a batch is mixed with probability `p`, by CutMix or MixUp (when
    both are on, CutMix with probability `switch`); labels become the mix of the two photos' labels."""

    cutmix: float = 0.0  # alpha of CutMix's Beta(alpha, alpha) area share (keras: factor=(alpha, alpha)); 0: off
    mixup: float = 0.0  # alpha of MixUp's Beta(alpha, alpha) blend weight; 0: off
    p: float = 1.0  # share of training batches that are mixed
    switch: float = 0.5  # with both on: share of the mixed batches that take CutMix

    @property
    def active(self) -> bool:
        return self.p > 0 and (self.cutmix > 0 or self.mixup > 0)


MIX_KEYS = tuple(f.name for f in dataclasses.fields(Mix))
# The range of each mix setting, both ends allowed (keras.layers.CutMix takes its factor in [0, 1]).
MIX_RANGES = {"cutmix": (0.0, 1.0), "mixup": (0.0, float("inf")), "p": (0.0, 1.0), "switch": (0.0, 1.0)}


@dataclass
class Stage:
    """One training stage. `trainable`: 'head', 'all', top N layers (int), a fraction (float) or 'from:<layer>'."""

    name: str
    trainable: str | int | float = "head"
    epochs: int = 1
    image_size: int = 224
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    schedule_options: dict = field(default_factory=dict)
    weight_decay: float = 0.0
    batch_size: int | None = None  # None: the notebook's batch_size
    augment: str | None = None  # None: the notebook's augment preset
    pseudo_labels: bool = False  # also train on the confident test rows the ensemble labelled
    mix: dict | None = None  # CutMix / MixUp, e.g. {"cutmix": 1.0, "mixup": 0.2, "p": 0.5} (Mix); None: off
    ema: float | None = None  # momentum of the weights' moving average (the optimizer's use_ema), e.g. 0.999
    clipnorm: float | None = None  # clip each gradient to this norm (the optimizer's clipnorm); None: no clipping


STAGE_KEYS = tuple(f.name for f in dataclasses.fields(Stage))


class ParamError(ValueError):
    """A parameter the notebook does not define, or a value outside its allowed set."""


def unknown(kind: str, key, valid, origin: str) -> ParamError:
    """ "<origin>: unknown <kind> 'x'; did you mean 'y'?" (or the valid values when nothing is close)."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(map(str, valid))}"
    return ParamError(f"{origin}: unknown {kind} {key!r}; {hint}")


def check_choice(name: str, value, allowed: tuple, origin: str) -> None:
    """`value` (each item of a list) must be in `allowed`; a backbone name is compared in lower case."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        compared = item.lower() if isinstance(item, str) and name == "backbone" else item
        if compared not in allowed:
            raise unknown(f"{name} value", item, allowed, origin)


def check_number(name: str, value, low: float, high: float, where: str, ends: str = "[]") -> None:
    """A number between low and high, each end allowed when `ends` says so ("[]", "(]", "()"), else one line."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = number and (value > low or (ends[0] == "[" and value == low))
    below = number and (value < high or (ends[1] == "]" and value == high))
    if not (above and below):
        raise ParamError(f"{where}: {name} is {value!r}, not a number in {ends[0]}{low:g}, {high:g}{ends[1]}")


def check_mix(mix, where: str) -> Mix:
    """A stage's `mix` mapping: known keys (a misspelt one gets its suggestion), each number in its range."""
    if not isinstance(mix, dict):
        raise ParamError(f"{where}: mix is {mix!r}, not a mapping like {{'cutmix': 1.0, 'mixup': 0.2, 'p': 0.5}}")
    for key, value in mix.items():
        if key not in MIX_KEYS:
            raise unknown("mix key", key, MIX_KEYS, f"{where}: mix")
        check_number(f"mix {key}", value, *MIX_RANGES[key], where)
    return Mix(**mix)


def check_stage(spec, where: str) -> None:
    """One entry of `stages`: a mapping of Stage fields, each value with a fixed set drawn from it, `mix`'s own keys,
    and the numbers that have a range (ema, clipnorm)."""
    if not isinstance(spec, dict):
        raise ParamError(f"{where} is {spec!r}, not a mapping of stage settings")
    for key in spec:
        if key not in STAGE_KEYS:
            raise unknown("stage key", key, STAGE_KEYS, where)
    for key, allowed in STAGE_CHOICES.items():
        if spec.get(key) is not None:  # None: the notebook's own setting
            check_choice(key, spec[key], allowed, where)
    if spec.get("mix") is not None:
        check_mix(spec["mix"], where)
    if spec.get("ema") is not None:
        check_number("ema", spec["ema"], 0.0, 1.0, where, "()")  # a momentum: at 1 the average never moves
    if spec.get("clipnorm") is not None:
        check_number("clipnorm", spec["clipnorm"], 0.0, float("inf"), where, "()")


def mixes(spec: dict) -> bool:
    """Whether a stage (its dict or Stage) mixes labels."""
    mix = spec.get("mix") if isinstance(spec, dict) else spec.mix
    return mix is not None and Mix(**mix).active


def check_values(params: dict, origin: str) -> None:
    """Values drawn from a fixed set (presets, backbone, precision, ..., each stage's keys, optimizer, schedule)."""
    for name, value in params.items():
        if name in PARAMETER_CHOICES:
            check_choice(name, value, PARAMETER_CHOICES[name], origin)
    stages = params.get("stages")
    if isinstance(stages, list):
        for index, spec in enumerate(stages):
            check_stage(spec, f"{origin}: stages[{index}]")
        check_class_weight_and_mix(params.get("class_weight"), stages, origin)
    size = params.get("predict_image_size")
    if size is not None and size != PREDICT_SIZE_AUTO and not (isinstance(size, int) and size >= 0):
        raise ParamError(f"{origin}: predict_image_size is {size!r}; give 0 (the size trained at), a size in pixels "
                         f"or {PREDICT_SIZE_AUTO!r} (the best of a few sizes on validation)")  # fmt: skip


def check_class_weight_and_mix(class_weight, stages: list, origin: str) -> None:
    """Keras weighs a sample by the class of its label's largest share, which is wrong for a mixed label: refused."""
    mixed = [index for index, spec in enumerate(stages) if isinstance(spec, dict) and mixes(spec)]
    if class_weight and mixed:
        raise ParamError(
            f"{origin}: class_weight={class_weight!r} does not combine with CutMix/MixUp (stages[{mixed[0]}] mixes "
            "labels, and Keras would weigh a mixed photo by one class only): set class_weight to None or drop `mix`"
        )


def parse_stages(stages: list[dict]) -> list[Stage]:
    """Stage dicts from the parameters cell -> Stage objects; a misspelt key or value stops with its suggestion."""
    if not stages:
        raise ParamError("stages is empty: give at least one stage")
    parsed = []
    for index, spec in enumerate(stages):
        check_stage(spec, f"stages[{index}]")
        parsed.append(Stage(**{"name": f"stage{index + 1}", **spec}))
    return parsed
