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
    drop_path: float | None = None,
) -> keras.Model:
    """uint8 RGB images of any size -> class probabilities.

    backbone_bn: "frozen" keeps the backbone's BatchNorm layers frozen for good (trainable=False), which in Keras 3
    also runs them in inference mode whatever the `training` flag, so pretrained statistics stay as trained even
    when the rest of the backbone trains (Keras transfer-learning guide); "train" lets BatchNorm learn batch
    statistics, which a randomly initialised backbone needs; "auto" is "frozen" with ImageNet weights, else "train".
    The backbone gets the `training` flag either way, so its stochastic depth (EfficientNet's drop-connect) works
    while training.
    drop_path: the stochastic-depth rate the backbone's blocks ramp up to (keras.applications' drop_connect_rate,
    0.2 for EfficientNet V1 and V2); None keeps the backbone's own, 0 turns it off. A backbone without stochastic
    depth (Xception, ConvNeXt as keras.applications builds it) takes only None or 0.
    """
    if backbone_bn not in ("auto", "frozen", "train"):
        raise ValueError(f"backbone_bn={backbone_bn!r}; choose auto, frozen or train")
    if backbone_bn == "auto":
        backbone_bn = "frozen" if weights else "train"
    spec = backbone_spec(backbone)
    base = load_backbone(backbone, weights)
    set_drop_path(base, spec, backbone, drop_path)
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    if keras_augment and keras_augment != "none":
        from lib.augment import keras_augmentation

        x = keras_augmentation(keras_augment)(x)  # active only while training
    x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="backbone_input")(x)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if backbone_bn == "train":
                layer.momentum = 0.9  # short runs from scratch: let moving statistics catch up within an epoch
            else:
                layer.trainable = False
    x = base(x)
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
    model.backbone_name = backbone  # set_trainable unfreezes fractions of it block by block
    return model


def drop_path_layers(base: keras.Model) -> list:
    """The Dropout layers that drop a whole residual branch per photo (noise shape (None, 1, 1, 1)): EfficientNet's
    drop-connect, i.e. stochastic depth."""
    return [
        layer
        for layer in base.layers
        if isinstance(layer, keras.layers.Dropout) and tuple(layer.noise_shape or ()) == (None, 1, 1, 1)
    ]


def set_drop_path(base: keras.Model, spec: Backbone, name: str, drop_path: float | None) -> None:
    """Scale the backbone's stochastic-depth rates so that they ramp up to `drop_path` (None: as built)."""
    if drop_path is None:
        return
    layers = drop_path_layers(base)
    if not layers or not spec.drop_path:
        if drop_path:
            raise ValueError(f"backbone {name!r} has no stochastic depth in keras.applications: set drop_path to None")
        return
    if not 0 <= drop_path < 1:
        raise ValueError(f"drop_path={drop_path!r}: give a rate in [0, 1), or None for the backbone's own")
    for layer in layers:
        layer.rate = layer.rate * drop_path / spec.drop_path


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested keras.applications model inside `build_model`'s output."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def set_trainable(model: keras.Model, which="head", freeze_batchnorm: bool | None = None) -> int:
    """Choose the trainable backbone layers; the head stays trainable. Returns the trainable parameter count.

    BatchNorm layers of a pretrained backbone stay frozen (a frozen Keras BatchNorm also runs in inference
    mode); `freeze_batchnorm=None` freezes them unless the model was built with backbone_bn="train".
    `which`: "head" (backbone frozen), "all", an int N (the top N backbone layers), a float in (0, 1]
    (about that fraction of the backbone's layers, from the top, moved to the nearest block boundary so that no
    block trains in part: keras-io's EfficientNet fine-tuning example warns against splitting a block, whose
    shortcut spans it), or "from:<layer name>".
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
        pattern = backbone_spec(model.backbone_name).block_pattern if hasattr(model, "backbone_name") else ""
        first = block_boundary(base, len(layers) - int(round(which * len(layers))), pattern)
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


def layer_blocks(base: keras.Model, pattern: str) -> list[str | None]:
    """The block each backbone layer belongs to, by the backbone's `block_pattern` (lib.backbones); a layer whose
    name names no block (Xception's unnamed residual conv and add) joins the block before it."""
    import re

    compiled = re.compile(pattern)
    blocks, current = [], None
    for layer in base.layers:
        found = compiled.search(layer.name)
        current = found.group(1) if found else current
        blocks.append(current)
    return blocks


def block_boundary(base: keras.Model, first: int, pattern: str) -> int:
    """The first layer of the block nearest to layer index `first` (on a tie, the one that trains more). Every
    block start lies before the last layer, so a fraction never rounds down to nothing. No pattern: `first`."""
    if not pattern or first <= 0:
        return max(0, first)
    blocks = layer_blocks(base, pattern)
    starts = [0] + [index for index in range(1, len(blocks)) if blocks[index] != blocks[index - 1]]
    return min(starts, key=lambda start: (abs(start - first), start))


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
    settings = {name: params[name] for name in names}
    settings["drop_path"] = params.get("drop_path")  # runs recorded before drop_path existed: the backbone's own
    return build_model(params["backbone"], **{**settings, **overrides})


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
