"""Grad-CAM heatmaps over a model's last convolutional block, on the TensorFlow and the JAX Keras backends."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd

# (model, layer name) -> (images -> feature maps, feature maps -> class scores); built once per model and layer.
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def last_conv_layer(model: keras.Model) -> str:
    """The name of the last layer with a 4-D output, looking inside a nested backbone (build_model's Xception gives
    "block14_sepconv2_act", EfficientNetB7 "top_activation")."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            try:
                return last_conv_layer(layer)
            except ValueError:
                continue
        if len(_call_tensors(model, layer)[1].shape) == 4:
            return layer.name
    raise ValueError(f"{model.name} has no layer with a 4-D (batch, height, width, channels) output")


def heatmaps(
    model: keras.Model,
    images: np.ndarray,
    class_indices=None,
    layer_name: str | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of `images` [N, H, W, C], as the model takes them (build_model: uint8 RGB):
    [N, H, W] float32 in [0, 1], each map scaled by its own maximum (all zeros where nothing speaks for the class).

    class_indices: one class per image, or one for all; None explains each image's predicted class. The score is
    the class's pre-softmax logit when the model ends in a softmax Activation, as in the paper. layer_name defaults
    to last_conv_layer(model); a layer inside a nested backbone is found by its own name.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [N, H, W, C], got shape {images.shape}")
    to_maps, to_scores = _split(model, layer_name or last_conv_layer(model))
    if class_indices is not None:
        class_indices = np.broadcast_to(np.asarray(class_indices, dtype=np.int32), (len(images),))
    out = np.zeros(images.shape[:3], dtype=np.float32)
    for start in range(0, len(images), batch_size):
        maps = _feature_maps(to_maps, images[start : start + batch_size])
        if class_indices is None:
            scores = keras.ops.convert_to_numpy(to_scores(maps, training=False))
            classes = scores.argmax(axis=-1).astype(np.int32)
        else:
            classes = np.ascontiguousarray(class_indices[start : start + batch_size])
        gradients = class_score_gradients(to_scores, maps, classes).astype(np.float32)
        channel_weights = gradients.mean(axis=(1, 2), keepdims=True)  # global-average-pooled gradients
        cams = np.maximum((channel_weights * maps).sum(axis=-1), 0.0)
        for offset, cam in enumerate(cams):
            out[start + offset] = _to_image_size(cam, images.shape[1:3])
    return out


def overlay(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image with the heatmap (values in [0, 1], resized to fit) blended over it in the jet colormap: uint8 RGB."""
    image = np.asarray(image_uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.round(heat * 255)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blend = (1.0 - alpha) * image[..., :3].astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


@dataclass
class RunExplanation:
    """One trained run's Grad-CAM: its surest mistakes and right answers, and the ensemble's mistakes as it saw them."""

    name: str
    image_size: int
    panels: list[np.ndarray]  # photo, heatmap, photo, heatmap, ...
    titles: list[str]
    ensemble_overlays: list[np.ndarray] = field(default_factory=list)  # one per ensemble mistake


def explain_runs(
    run_folders: dict[str, Path],
    val_probs: dict[str, np.ndarray],
    labels,
    ids,
    photo_paths,
    per_kind: int,
    image_size: int = 0,
    ensemble_mistakes: pd.DataFrame | None = None,
) -> list[RunExplanation]:
    """Grad-CAM for each trained run (03, 04): rebuilt from its folder with its best weights (nothing downloaded),
    it explains its own predicted class on its `per_kind` surest mistakes and right answers, at the size it
    predicted at (`image_size` 0) or `image_size`; and, for each row of `ensemble_mistakes` (lib.analysis.errors
    .misclassified of the blend), the class the ensemble wrongly chose. One model is in memory at a time."""
    from lib.analysis.errors import confident_examples
    from lib.images import read_resized
    from lib.models import load_trained, trained_image_size

    explained = []
    for name, folder in run_folders.items():
        model, size = load_trained(folder), image_size or trained_image_size(folder)
        sample = confident_examples(val_probs[name], labels, ids, photo_paths, per_kind)
        photos = np.stack([read_resized(path, size) for path in sample["path"]])
        maps = heatmaps(model, photos)  # each photo's predicted class
        titles = [
            f"{kind}: {true}\npred: {pred} ({conf:.2f})"
            for kind, true, pred, conf in zip(
                sample["kind"], sample["true name"], sample["predicted name"], sample["confidence"]
            )
        ]
        explanation = RunExplanation(
            name,
            size,
            [image for photo, cam in zip(photos, maps) for image in (photo, overlay(photo, cam))],
            [text for title in titles for text in (title, "Grad-CAM")],
        )
        if ensemble_mistakes is not None and len(ensemble_mistakes):
            chosen = np.stack([read_resized(path, size) for path in ensemble_mistakes["path"]])
            chosen_maps = heatmaps(model, chosen, class_indices=ensemble_mistakes["predicted"].tolist())
            explanation.ensemble_overlays = [overlay(photo, cam) for photo, cam in zip(chosen, chosen_maps)]
        explained.append(explanation)
        del model
        keras.backend.clear_session()  # one model in memory at a time
    return explained


def class_score_gradients(to_scores: keras.Model, maps: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """d score[i, classes[i]] / d maps[i] per image: the one backend-specific step. Inference mode, so each image's
    score depends on its own maps only and the gradient of the summed scores is each image's own."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from lib.tf_only import class_score_gradients as tensorflow_gradients

        return tensorflow_gradients(to_scores, maps, classes)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in to_scores.trainable_variables]
        non_trainable = [v.value for v in to_scores.non_trainable_variables]

        def summed_scores(feature_maps):
            scores, _ = to_scores.stateless_call(trainable, non_trainable, feature_maps, training=False)
            return jnp.take_along_axis(scores.astype("float32"), jnp.asarray(classes)[:, None], axis=1).sum()

        return np.asarray(jax.grad(summed_scores)(jnp.asarray(maps)))
    raise NotImplementedError(f"Grad-CAM supports the tensorflow and jax Keras backends, not {backend!r}")


def _feature_maps(to_maps: keras.Model, images: np.ndarray) -> np.ndarray:
    """The forward pass to the feature maps: compiled on JAX, where eager calls compile every op on first use
    (Xception 96 px, first call: 11 s against 29 s here); eager elsewhere, since tracing a TensorFlow graph costs
    more than a few batches (EfficientNetB7: 43 s against 5 s)."""
    if keras.backend.backend() == "jax":
        return np.asarray(to_maps.predict_on_batch(images), dtype=np.float32)
    return np.asarray(keras.ops.convert_to_numpy(to_maps(images, training=False)), dtype=np.float32)


def _to_image_size(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    top = float(cam.max())
    if not np.isfinite(top) or top <= 0:
        return np.zeros(size, dtype=np.float32)
    return np.clip(np.nan_to_num(cam / top), 0.0, 1.0).astype(np.float32)


def _call_tensors(model: keras.Model, layer) -> tuple[list, keras.KerasTensor]:
    """The symbolic inputs and output of the layer's call in `model`'s graph. A nested Model's own .output is its
    inner graph's, not its call's, and building the split models calls layers again, hence the node lookup (the
    one Keras's Functional.get_config does)."""
    from keras.src.ops.function import make_node_key

    nodes = [
        node for index, node in enumerate(layer._inbound_nodes) if make_node_key(layer, index) in model._nodes
    ]  # fmt: skip
    if len(nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times in {model.name}; Grad-CAM needs one call")
    outputs = nodes[0].output_tensors
    if len(outputs) != 1:
        raise ValueError(f"layer {layer.name!r} has {len(outputs)} outputs; Grad-CAM needs one feature map")
    return list(nodes[0].input_tensors), outputs[0]


def _score_tensor(model: keras.Model):
    """The model's output, or the input of its final softmax Activation: Grad-CAM explains pre-softmax scores."""
    last = model.layers[-1]
    if (
        len(model.outputs) == 1
        and model.outputs[0] is _call_tensors(model, last)[1]
        and isinstance(last, keras.layers.Activation)
        and getattr(last.activation, "__name__", "") == "softmax"
    ):
        return _call_tensors(model, last)[0][0]
    return model.outputs[0]


def _contains(model: keras.Model, name: str) -> bool:
    return any(
        layer.name == name or (isinstance(layer, keras.Model) and _contains(layer, name)) for layer in model.layers
    )


def _split(model: keras.Model, name: str) -> tuple[keras.Model, keras.Model]:
    """(images -> the layer's feature maps, feature maps -> class scores) as two functional models sharing the
    model's weights. A Keras 3 nested model's inner tensors are not part of the outer graph, so a layer inside a
    backbone splits the backbone in two and joins each half to its side of the outer graph."""
    cached = _SPLITS.get(model, {})
    if name not in cached:
        to_maps, to_scores = _split_graph(model, _score_tensor(model), name)
        if not isinstance(to_scores, keras.Model):
            raise ValueError(f"layer {name!r} gives {model.name}'s output itself; choose a layer before the scores")
        cached[name] = to_maps, to_scores
        _SPLITS[model] = cached
    return cached[name]


def _split_graph(model: keras.Model, output, name: str) -> tuple[keras.Model, keras.Model]:
    if len(model.inputs) != 1:
        raise ValueError(f"{model.name} has {len(model.inputs)} inputs; Grad-CAM needs one image input")
    names = [layer.name for layer in model.layers]
    if name in names:
        maps = _call_tensors(model, model.get_layer(name))[1]
        return keras.Model(model.inputs[0], maps), _graph_between(maps, output)
    nested = next((layer for layer in model.layers if isinstance(layer, keras.Model) and _contains(layer, name)), None)
    if nested is None:
        raise ValueError(f"no layer named {name!r} in {model.name} or its nested models")
    inner_to_maps, inner_to_output = _split_graph(nested, nested.outputs[0], name)
    nested_inputs, nested_output = _call_tensors(model, nested)
    if len(nested_inputs) != 1:
        raise ValueError(f"nested model {nested.name!r} takes {len(nested_inputs)} inputs; Grad-CAM needs one")

    images = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="gradcam_images")
    maps = inner_to_maps(_graph_between(model.inputs[0], nested_inputs[0])(images))
    to_maps = keras.Model(images, maps, name=f"{model.name}_to_{name}")

    feature_maps = keras.Input(shape=maps.shape[1:], dtype=maps.dtype, name="gradcam_maps")
    scores = _graph_between(nested_output, output)(inner_to_output(feature_maps))
    return to_maps, keras.Model(feature_maps, scores, name=f"{name}_to_scores")


def _graph_between(start, end):
    """The part of a functional graph from tensor `start` to tensor `end`, callable; identity when they are one."""
    return (lambda tensor: tensor) if start is end else keras.Model(start, end)
