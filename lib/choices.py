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


def check_stage(spec, where: str) -> None:
    """One entry of `stages`: a mapping of Stage fields, each value with a fixed set drawn from it."""
    if not isinstance(spec, dict):
        raise ParamError(f"{where} is {spec!r}, not a mapping of stage settings")
    for key in spec:
        if key not in STAGE_KEYS:
            raise unknown("stage key", key, STAGE_KEYS, where)
    for key, allowed in STAGE_CHOICES.items():
        if spec.get(key) is not None:  # None: the notebook's own setting
            check_choice(key, spec[key], allowed, where)


def check_values(params: dict, origin: str) -> None:
    """Values drawn from a fixed set (presets, backbone, precision, ..., each stage's keys, optimizer, schedule)."""
    for name, value in params.items():
        if name in PARAMETER_CHOICES:
            check_choice(name, value, PARAMETER_CHOICES[name], origin)
    stages = params.get("stages")
    if isinstance(stages, list):
        for index, spec in enumerate(stages):
            check_stage(spec, f"{origin}: stages[{index}]")


def parse_stages(stages: list[dict]) -> list[Stage]:
    """Stage dicts from the parameters cell -> Stage objects; a misspelt key or value stops with its suggestion."""
    if not stages:
        raise ParamError("stages is empty: give at least one stage")
    parsed = []
    for index, spec in enumerate(stages):
        check_stage(spec, f"stages[{index}]")
        parsed.append(Stage(**{"name": f"stage{index + 1}", **spec}))
    return parsed
