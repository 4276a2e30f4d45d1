"""Backbones with a custom head, and layer freezing for staged fine-tuning."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from lib import NUM_CLASSES
from lib.paths import keras_home

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications backbone and what its input expects."""

    builder: str  # attribute of keras.applications
    scale: float  # uint8 pixels -> backbone input: x * scale + offset
    offset: float
    min_size: int
    notop_file: str  # the ImageNet weights file Keras caches under $KERAS_HOME/models


BACKBONES = {
    # Xception wants [-1, 1]; EfficientNets rescale and normalise inside the model, so they take 0-255 floats.
    "xception": Backbone("Xception", 1 / 127.5, -1.0, 71, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{
        f"efficientnetb{i}": Backbone(f"EfficientNetB{i}", 1.0, 0.0, 32, f"efficientnetb{i}_notop.h5") for i in range(8)
    },
    # Small and fast: quick experiments and the test suite.
    "mobilenetv3small": Backbone(
        "MobileNetV3Small", 1.0, 0.0, 32, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    ),
}


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded and are not in the Keras cache."""


def backbone_spec(name: str) -> Backbone:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def cached_weights_path(name: str) -> Path:
    return keras_home() / "models" / backbone_spec(name).notop_file


def find_attached_weights(name: str) -> Path | None:
    """On Kaggle (internet off), the weights file in any attached dataset under /kaggle/input."""
    from lib.paths import kaggle_root, on_kaggle

    if not on_kaggle():
        return None
    return next(iter(sorted((kaggle_root() / "input").rglob(backbone_spec(name).notop_file))), None)


def load_backbone(name: str, weights: str | None = "imagenet", download_timeout: float = 60.0) -> keras.Model:
    """The backbone without its top, accepting any image size; a clear error when weights can't be fetched."""
    spec = backbone_spec(name)
    builder = getattr(keras.applications, spec.builder)
    attached = (
        find_attached_weights(name) if weights == "imagenet" and not cached_weights_path(name).is_file() else None
    )
    if attached is not None:
        cached_weights_path(name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(attached, cached_weights_path(name))
    if weights != "imagenet" or cached_weights_path(name).is_file():
        return builder(include_top=False, weights=weights, input_shape=(None, None, 3))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout)  # never hang on a dead network
    try:
        return builder(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as err:  # Keras wraps network errors in a plain Exception("URL fetch failure ...")
        if not any(word in str(err) for word in ("URL fetch failure", "urlopen", "timed out", "Name or service")):
            raise
        cache = cached_weights_path(name)
        raise WeightsUnavailableError(
            f"Could not download the ImageNet weights for {spec.builder} ({err.__class__.__name__}). "
            f"Place `{spec.notop_file}` (from {WEIGHTS_URL}) in {cache.parent}/ "
            f"(set KERAS_HOME to move the cache; on Kaggle, attach a dataset holding it), "
            f"or use weights=None to train from scratch."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def build_model(
    backbone: str = "xception",
    *,
    weights: str | None = "imagenet",
    num_classes: int = NUM_CLASSES,
    pooling: str = "avg",
    head_batchnorm: bool = True,
    dropout: float = 0.3,
    dense_units: int = 256,
    activation: str = "relu",
    l2: float = 0.0,
    keras_augment: str = "none",
    backbone_bn: str = "auto",
) -> keras.Model:
    """uint8 RGB images of any size -> class probabilities.

    backbone_bn: "frozen" runs the backbone in inference mode, so pretrained BatchNorm statistics stay as trained
    even when its layers are unfrozen (Keras transfer-learning guide); "train" lets BatchNorm learn batch
    statistics, which a randomly initialised backbone needs; "auto" is "frozen" with ImageNet weights, else "train".
    """
    if backbone_bn not in ("auto", "frozen", "train"):
        raise ValueError(f"backbone_bn={backbone_bn!r}; choose auto, frozen or train")
    if backbone_bn == "auto":
        backbone_bn = "frozen" if weights else "train"
    spec = backbone_spec(backbone)
    base = load_backbone(backbone, weights)
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    if keras_augment and keras_augment != "none":
        from lib.augment import keras_augmentation

        x = keras_augmentation(keras_augment)(x)  # active only while training
    x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="backbone_input")(x)
    if backbone_bn == "train":
        for layer in base.layers:  # short runs from scratch: let moving statistics catch up within an epoch
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(x, training=False) if backbone_bn == "frozen" else base(x)
    pools = {
        "avg": [keras.layers.GlobalAveragePooling2D(name="gap")],
        "max": [keras.layers.GlobalMaxPooling2D(name="gmp")],
        "avgmax": [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.GlobalMaxPooling2D(name="gmp")],
    }
    if pooling not in pools:
        raise ValueError(f"Unknown pooling {pooling!r}; choose avg, max or avgmax")
    pooled = [layer(x) for layer in pools[pooling]]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="avgmax")(pooled)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    if head_batchnorm:
        x = keras.layers.BatchNormalization(name="head_bn")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, activation=activation, kernel_regularizer=regularizer, name="head_dense")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout2")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    # Softmax in float32 even under mixed precision, for stable losses and probabilities.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    model = keras.Model(inputs, outputs, name=f"{backbone}_classifier")
    model.backbone_bn = backbone_bn  # set_trainable keeps BatchNorm learning when the backbone trains it
    return model


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested keras.applications model inside `build_model`'s output."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def set_trainable(model: keras.Model, which="head", freeze_batchnorm: bool | None = None) -> int:
    """Choose the trainable backbone layers; the head stays trainable. Returns the trainable parameter count.

    BatchNorm layers of a pretrained backbone stay frozen (a frozen Keras BatchNorm also runs in inference
    mode); `freeze_batchnorm=None` freezes them unless the model was built with backbone_bn="train".
    `which`: "head" (backbone frozen), "all", an int N (the top N backbone layers), a float in (0, 1]
    (that fraction of the backbone's layers, from the top), or "from:<layer name>".
    """
    base = backbone_of(model)
    layers = base.layers
    if freeze_batchnorm is None:
        freeze_batchnorm = getattr(model, "backbone_bn", "frozen") != "train"
    if which == "head":
        first = len(layers)
    elif which == "all":
        first = 0
    elif isinstance(which, str) and which.startswith("from:"):
        names = [layer.name for layer in layers]
        if which[5:] not in names:
            raise ValueError(f"No layer named {which[5:]!r} in {base.name}; e.g. {names[-20]!r}")
        first = names.index(which[5:])
    elif isinstance(which, bool) or not isinstance(which, (int, float)):
        raise ValueError(f"trainable={which!r}: use 'head', 'all', an int N, a fraction in (0, 1] or 'from:<layer>'")
    elif isinstance(which, float):
        if not 0 < which <= 1:
            raise ValueError(f"trainable fraction must be in (0, 1], got {which}")
        first = len(layers) - int(round(which * len(layers)))
    else:
        first = max(0, len(layers) - which)
    base.trainable = first < len(layers)
    for index, layer in enumerate(layers):
        frozen_bn = freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not frozen_bn
    for layer in model.layers:
        if layer is not base:
            layer.trainable = True
    return count_params(model.trainable_weights)


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))
