"""Backbones with a custom head, and layer freezing for staged fine-tuning."""

from __future__ import annotations

import socket
import urllib.error

import keras
import numpy as np
import pandas as pd

from lib import NUM_CLASSES
from lib.backbones import (
    TEST_CNN,
    Backbone,
    backbone_spec,
    cached_weights_path,
    find_weights,
    missing_weights_message,
)

# What Keras's download raises for a dead network (it wraps URLError in a plain Exception("URL fetch failure ..."))
# or a broken transfer (its hash check).
_DOWNLOAD_FAILURES = ("URL fetch failure", "urlopen", "timed out", "Name or service", "Incomplete or corrupted file")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are not found locally and could not be downloaded (or a found file cannot be loaded)."""

    def __init__(self, message: str, reason: str = "", offline: bool = False):
        super().__init__(message)
        self.reason = reason  # why the download failed, in a few words
        self.offline = offline  # no connection at all (not an HTTP error or a corrupt file)


def _download_failure(err: Exception) -> tuple[str, bool] | None:
    """(short reason, whether no connection could be made) when `err` is a failed Keras download, else None."""
    text = str(err)
    if not any(word in text for word in _DOWNLOAD_FAILURES):
        return None
    reason = text.split(" -- ")[-1].strip() if " -- " in text else text.splitlines()[0]
    cause = err.__context__  # Keras raises its Exception inside `except URLError`
    no_connection = isinstance(err, TimeoutError) or (
        isinstance(cause, urllib.error.URLError) and not isinstance(cause, urllib.error.HTTPError)
    )
    return reason, no_connection


def test_cnn(input_shape=(None, None, 3)) -> keras.Model:
    """The `test_cnn` backbone: 4 blocks of a strided 3x3 convolution, BatchNorm and ReLU (16 to 64 filters, about
    60k weights), shaped like a keras.applications backbone without its top, so every path of the series (freezing,
    BatchNorm modes, Grad-CAM, distribution) runs on it in seconds. Randomly initialised; no pretrained weights."""
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for block, filters in enumerate((16, 32, 64, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
    return keras.Model(inputs, x, name=TEST_CNN)


def _build(spec: Backbone, weights):
    if spec.builder == TEST_CNN:
        if weights is not None:
            raise ValueError(f"backbone {TEST_CNN!r} has no pretrained weights: use weights=None")
        return test_cnn()
    builder = getattr(keras.applications, spec.builder)
    return builder(include_top=False, weights=weights, input_shape=(None, None, 3))


def download_backbone(name: str, timeout: float = 60.0) -> keras.Model:
    """Build with weights="imagenet": Keras downloads the file into its cache ($KERAS_HOME/models) and checks it
    against the hash it ships. A dead network fails within `timeout` seconds, as WeightsUnavailableError."""
    spec = backbone_spec(name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # never hang on a dead network
    try:
        return _build(spec, "imagenet")
    except Exception as err:
        failure = _download_failure(err)
        if failure is None:
            raise
        reason, offline = failure
        if "Incomplete or corrupted" in reason:  # Keras leaves the file that failed its hash check in the cache
            cached_weights_path(name).unlink(missing_ok=True)
        raise WeightsUnavailableError(missing_weights_message(name, reason), reason, offline) from None
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone(name: str, weights: str | None = "imagenet", download_timeout: float = 60.0) -> keras.Model:
    """The backbone without its top, accepting any image size.

    weights="imagenet" loads the weight file that lib.backbones.find_weights finds ($KERAS_HOME/models, $WEIGHTS_DIR,
    any attached Kaggle dataset) straight from where it lies; only when none is found does Keras download it.
    """
    spec = backbone_spec(name)
    if weights != "imagenet" or spec.builder == TEST_CNN:
        return _build(spec, weights)
    found = find_weights(name)
    if found is None:
        return download_backbone(name, download_timeout)
    try:
        return _build(spec, str(found))
    except (OSError, ValueError) as err:  # h5py cannot open it, or its layers do not match the backbone
        first_line = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise WeightsUnavailableError(
            f"{found} is not a loadable {spec.builder} weight file ({first_line}); delete or replace it"
        ) from None


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


def head_table(model: keras.Model) -> pd.DataFrame:
    """build_model's layers in order, the backbone as one row: name, type, output shape and weights. What the
    notebooks show before training: the small head that sits on the pretrained backbone."""
    base = backbone_of(model)
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        kind = type(layer).__name__
        if layer is base:
            kind = f"{base.name} (the backbone, {len(base.layers)} layers)"
        elif isinstance(layer, keras.layers.Dropout):
            kind = f"Dropout({layer.rate:g})"
        elif isinstance(layer, keras.layers.Dense):
            kind = f"Dense({layer.units}, {layer.activation.__name__})"
        rows.append(
            {
                "layer": layer.name,
                "type": kind,
                "output shape": str(tuple(shape.shape)) if shape is not None else "",
                "weights": count_params(layer.weights),
            }
        )
    return pd.DataFrame(rows).set_index("layer")


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def build_from_params(params: dict, **overrides) -> keras.Model:
    """build_model with a notebook's parameters (backbone, weights and the head's settings); `overrides` win."""
    names = ("weights", "pooling", "head_batchnorm", "dropout", "dense_units", "activation", "l2", "keras_augment")
    return build_model(params["backbone"], **{**{name: params[name] for name in names}, **overrides})


def load_trained(run_folder, weights_file: str = "best.weights.h5") -> keras.Model:
    """The model a 03/04 run trained, rebuilt from its params.json with no download (the pretrained weights are
    replaced by the run's anyway) and its best weights loaded. A K-fold run gives its first fold's model."""
    from pathlib import Path

    from lib.runs import read_json

    folder = Path(run_folder)
    if not (folder / weights_file).exists() and (folder / "fold_0" / weights_file).exists():
        folder = folder / "fold_0"
    if not (folder / weights_file).exists():
        raise FileNotFoundError(f"No {weights_file} in {folder}: run its notebook first (make 03_xception, ...).")
    p = read_json(folder / "params.json")
    # As trained: BatchNorm's mode follows the pretrained weights, which the run's own weights replace anyway.
    model = build_from_params(p, weights=None, backbone_bn="frozen" if p.get("weights") else "train")
    model.load_weights(folder / weights_file)
    return model


def trained_image_size(run_folder) -> int:
    """The image size a 03/04 run predicted at (its metrics.json `image_size`; a K-fold run's first fold's)."""
    from pathlib import Path

    from lib.runs import read_json

    for folder in (Path(run_folder), Path(run_folder) / "fold_0"):
        metrics = folder / "metrics.json"
        if metrics.exists() and read_json(metrics).get("image_size"):
            return int(read_json(metrics)["image_size"])
    raise FileNotFoundError(f"No image_size in {run_folder}/metrics.json: run its notebook to the end first.")
