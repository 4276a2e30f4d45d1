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
    """How to build one keras.applications backbone, what its input expects and how it is made."""

    builder: str  # attribute of keras.applications (or TEST_CNN, built by lib.models)
    scale: float  # uint8 pixels -> backbone input: x * scale + offset
    offset: float
    notop_file: str | None  # the exact name keras.applications gives its ImageNet weights without the top
    block_pattern: str = ""  # regex whose group 1 names a layer's block; fractions of layers unfreeze whole blocks
    batchnorm: bool = True  # False: LayerNorm only (ConvNeXt), nothing for a frozen BatchNorm to keep
    drop_path: float | None = None  # the stochastic-depth rate keras.applications builds in; None: it has none
    pretraining: str = "ImageNet-1k"


# keras.applications names its weight files after the model: EfficientNetV2's `name + "_notop.h5"` with names like
# "efficientnetv2-s", ConvNeXt's the same with "convnext_base" (keras/src/applications/{efficientnet_v2,convnext}.py).
EFFICIENTNET_BLOCKS = r"^(stem|top|block\d+[a-z])_"  # block1a_..., block7d_add, stem_conv, top_bn (V1 and V2)
CONVNEXT_BLOCKS = r"_(stem|stage_\d+_block_\d+|downsampling_block_\d+)"  # convnext_tiny_stage_2_block_8_gelu
EFFICIENTNET_V2 = {"b0": "B0", "b1": "B1", "b2": "B2", "b3": "B3", "s": "S", "m": "M", "l": "L"}
CONVNEXT = ("tiny", "small", "base", "large")

BACKBONES = {
    # Xception wants [-1, 1]; EfficientNets (V1 and V2) and ConvNeXt rescale and normalise inside the model, so they
    # take 0-255 floats. Xception's unnamed residual layers (conv2d, add) join the block before them.
    "xception": Backbone(
        "Xception", 1 / 127.5, -1.0, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", r"^(block\d+)_"
    ),
    # keras.applications builds EfficientNet V1 and V2 with drop_connect_rate 0.2: each block's residual branch is
    # dropped (a Dropout with noise_shape (None, 1, 1, 1)) with a rate rising linearly to 0.2 over the blocks.
    **{
        f"efficientnetb{i}": Backbone(
            f"EfficientNetB{i}", 1.0, 0.0, f"efficientnetb{i}_notop.h5", EFFICIENTNET_BLOCKS, drop_path=0.2
        )
        for i in range(8)
    },
    **{
        f"efficientnetv2{size}": Backbone(
            f"EfficientNetV2{upper}", 1.0, 0.0, f"efficientnetv2-{size}_notop.h5", EFFICIENTNET_BLOCKS, drop_path=0.2
        )
        for size, upper in EFFICIENTNET_V2.items()
    },
    # LayerNorm, no BatchNorm. keras.applications' ConvNeXt builders fix drop_path_rate at 0.0 (no stochastic
    # depth); Base and Large were pre-trained on ImageNet-21k, then fine-tuned on ImageNet-1k (its docstring).
    **{
        f"convnext_{size}": Backbone(
            f"ConvNeXt{size.title()}",
            1.0,
            0.0,
            f"convnext_{size}_notop.h5",
            CONVNEXT_BLOCKS,
            batchnorm=False,
            pretraining="ImageNet-21k, then 1k" if size in ("base", "large") else "ImageNet-1k",
        )
        for size in CONVNEXT
    },
    # Small and fast: quick experiments.
    "mobilenetv3small": Backbone(
        "MobileNetV3Small",
        1.0,
        0.0,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        r"^(conv|expanded_conv(?:_\d+)?)_",
    ),
    # timm's test models in spirit: a 4-block CNN that traces in a second where a real backbone takes half a minute,
    # for the test suite and smoke runs of the pipeline. No pretrained weights.
    "test_cnn": Backbone(TEST_CNN, 1 / 255.0, 0.0, None, r"^(block\d+)_"),
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
