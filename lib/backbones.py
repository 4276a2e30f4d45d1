"""The keras.applications backbones the series can use, and where each one's ImageNet weight file is found offline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lib.paths import find_kaggle_input, kaggle_root, keras_home

# The Kaggle dataset that `make kaggle-weights` uploads and `make kaggle-kernel` attaches: <user>/<this slug>.
WEIGHTS_DATASET_SLUG = "sf-dl-cars-keras-weights"


TEST_CNN = "test_cnn"


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications backbone and what its input expects."""

    builder: str  # attribute of keras.applications (or TEST_CNN, built by lib.models)
    scale: float  # uint8 pixels -> backbone input: x * scale + offset
    offset: float
    notop_file: str | None  # the exact name keras.applications gives its ImageNet weights without the top


BACKBONES = {
    # Xception wants [-1, 1]; EfficientNets rescale and normalise inside the model, so they take 0-255 floats.
    "xception": Backbone("Xception", 1 / 127.5, -1.0, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{f"efficientnetb{i}": Backbone(f"EfficientNetB{i}", 1.0, 0.0, f"efficientnetb{i}_notop.h5") for i in range(8)},
    # Small and fast: quick experiments.
    "mobilenetv3small": Backbone("MobileNetV3Small", 1.0, 0.0, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    # timm's test models in spirit: a 4-block CNN that traces in a second where a real backbone takes half a minute,
    # for the test suite and smoke runs of the pipeline. No pretrained weights.
    "test_cnn": Backbone(TEST_CNN, 1 / 255.0, 0.0, None),
}


def backbone_spec(name: str) -> Backbone:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def pretrained(name: str) -> Backbone:
    """The backbone's spec when it has ImageNet weights; a ValueError naming the choice otherwise."""
    spec = backbone_spec(name)
    if spec.notop_file is None:
        raise ValueError(f"backbone {name!r} has no pretrained weights: use weights=None (train from scratch)")
    return spec


def cached_weights_path(name: str) -> Path:
    """Where Keras caches the file it downloads (and `make weights` puts it): $KERAS_HOME/models/<file>."""
    return keras_home() / "models" / pretrained(name).notop_file


def weights_dir() -> Path | None:
    """The folder named by the WEIGHTS_DIR environment variable, if set."""
    value = os.environ.get("WEIGHTS_DIR", "").strip()
    return Path(value).expanduser() if value else None


def find_weights(name: str) -> Path | None:
    """The backbone's ImageNet weight file, found by its exact name: in $KERAS_HOME/models, then in $WEIGHTS_DIR,
    then anywhere under <kaggle root>/input (the first in sorted order), so attached datasets work whether Kaggle
    mounts them at input/<slug>/ or input/datasets/<owner>/<slug>/."""
    file_name = pretrained(name).notop_file
    for folder in (keras_home() / "models", weights_dir()):
        if folder is not None and (folder / file_name).is_file():
            return folder / file_name
    return next(iter(find_kaggle_input(file_name)), None)


def searched_places() -> str:
    """Every place find_weights looks, in its order, as one phrase for an error message."""
    cache, extra, kaggle_input = keras_home() / "models", weights_dir(), kaggle_root() / "input"
    return ", ".join(
        [
            f"$KERAS_HOME/models ({cache})",
            f"$WEIGHTS_DIR ({extra})" if extra else "$WEIGHTS_DIR (not set)",
            f"every folder under {kaggle_input}" + ("" if kaggle_input.is_dir() else " (absent)"),
        ]
    )


def missing_weights_message(name: str, reason: str) -> str:
    """One line: the file, every place searched, why the download failed, and the two ways to fix it."""
    spec = backbone_spec(name)
    return (
        f"no ImageNet weights for {spec.builder}: `{spec.notop_file}` is not in {searched_places()}, "
        f"and downloading it failed ({reason}). Fix: run `make weights` on a machine with internet; "
        f"for a Kaggle kernel with the internet off, run `make kaggle-weights` once and attach the dataset "
        f"<your user>/{WEIGHTS_DATASET_SLUG} (`make kaggle-kernel` attaches it). "
        "Or train from scratch with weights=None."
    )
