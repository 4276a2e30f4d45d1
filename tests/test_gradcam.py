"""Grad-CAM heatmaps on the TensorFlow and the JAX backends: shape, range, and that they follow the object."""

import keras
import numpy as np
import pytest

from lib.analysis.gradcam import heatmaps, last_conv_layer, overlay

SIZE = 32


def brightness_layers():
    """Two convolutions with positive kernels and ReLU: the feature maps are bright where the image is."""
    return [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2"),
    ]


def brightness_classifier(nested: bool) -> keras.Model:
    """Class 0's logit grows with the image's brightness, class 1's shrinks; `nested` puts the convolutions in a
    sub-model, as build_model nests its backbone."""
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="to_float")(images)
    if nested:
        inner_input = keras.Input((None, None, 3))
        y = inner_input
        for layer in brightness_layers():
            y = layer(y)
        x = keras.Model(inner_input, y, name="backbone")(x)
    else:
        for layer in brightness_layers():
            x = layer(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(images, keras.layers.Activation("softmax", name="probs")(x))
    for layer in model.get_layer("backbone").layers if nested else model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([np.full(layer.kernel.shape, 0.1, "float32"), np.zeros(layer.bias.shape, "float32")])
    logits = model.get_layer("logits")
    logits.set_weights([np.stack([np.ones(4), -np.ones(4)], axis=1).astype("float32"), np.zeros(2, "float32")])
    return model


def square_image(top: int, left: int, side: int = 8) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[top : top + side, left : left + side] = 250
    return image


def centre_of_mass(heatmap: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(heatmap.shape)
    return np.array([(rows * heatmap).sum(), (cols * heatmap).sum()]) / heatmap.sum()


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_heatmap_follows_the_bright_square(nested):
    model = brightness_classifier(nested)
    assert last_conv_layer(model) == "conv2"
    images = np.stack([square_image(2, 2), square_image(22, 22)])
    maps = heatmaps(model, images)  # both images are predicted class 0, the brightness class
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    for heatmap, square_centre in zip(maps, [(5.5, 5.5), (25.5, 25.5)], strict=True):
        peak = np.unravel_index(heatmap.argmax(), heatmap.shape)
        assert np.abs(np.subtract(peak, square_centre)).max() <= 4
        assert np.abs(centre_of_mass(heatmap) - square_centre).max() <= 3
    # An earlier layer, named as it is inside the nested sub-model, follows the square as well.
    early = heatmaps(model, images, class_indices=0, layer_name="conv1")
    assert centre_of_mass(early[0])[0] < SIZE / 2 < centre_of_mass(early[1])[0]


def test_a_nested_model_named_as_the_layer_gives_its_last_inner_layer_maps():
    model = brightness_classifier(nested=True)
    images = np.stack([square_image(2, 2), square_image(22, 22)])
    np.testing.assert_allclose(heatmaps(model, images, layer_name="backbone"), heatmaps(model, images), atol=1e-6)
    assert not np.allclose(heatmaps(model, images, layer_name="conv1"), heatmaps(model, images), atol=1e-3)


def test_a_class_that_brightness_speaks_against_has_an_empty_heatmap():
    model = brightness_classifier(nested=True)
    images = np.stack([square_image(2, 2), square_image(22, 22)])
    against = heatmaps(model, images, class_indices=[1, 1])
    assert np.array_equal(against, np.zeros_like(against))
    assert heatmaps(model, images, class_indices=[0, 1])[0].max() == pytest.approx(1.0)


def test_unknown_layer_is_named_in_the_error():
    with pytest.raises(ValueError, match="no_such_layer"):
        heatmaps(brightness_classifier(nested=True), square_image(2, 2)[None], layer_name="no_such_layer")


def test_overlay_blends_a_colormap_over_the_image():
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    heatmap = np.zeros((SIZE // 2, SIZE // 2), np.float32)
    heatmap[:, SIZE // 4 :] = 1.0  # hot right half, resized to the image
    assert np.array_equal(overlay(image, heatmap, alpha=0.0), image)
    colored = overlay(image, heatmap, alpha=1.0)
    assert colored.shape == image.shape and colored.dtype == np.uint8
    hot, cold = colored[SIZE // 2, -1].astype(int), colored[SIZE // 2, 0].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where hot, blue where cold
    half = overlay(image, heatmap, alpha=0.5).astype(int)
    assert np.abs(half - (image.astype(int) + colored) / 2).max() <= 1


def test_xception_from_build_model():
    from lib.models import build_model

    model = build_model("xception", weights=None, num_classes=3, dense_units=8, dropout=0.0)
    assert last_conv_layer(model) == "block14_sepconv2_act"
    images = np.random.default_rng(0).integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
    maps = heatmaps(model, images)
    assert maps.shape == (2, 80, 80) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.max() == pytest.approx(1.0)  # random weights still weigh some channels positively


def test_explain_runs_rebuilds_each_run_and_explains_its_sure_answers_and_the_ensembles_mistakes(tmp_path):
    """06's Grad-CAM step: each run folder's model rebuilt from params.json with its best weights, its surest
    mistakes and right answers drawn at the size it predicted at, and each ensemble mistake as it saw it."""
    pytest.importorskip("sklearn")  # lib.analysis.errors: 06's environment, not the JAX-only one
    import cv2
    import pandas as pd

    from lib.analysis.gradcam import explain_runs
    from lib.models import build_model
    from lib.runs import write_json

    settings = dict(weights=None, pooling="avg", head_batchnorm=False, dropout=0.0, dense_units=4, activation="relu",
                    l2=0.0, keras_augment="none")  # fmt: skip
    folders = {}
    for name, size in (("03_a", 40), ("04_b", 48)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        build_model("test_cnn", **settings).save_weights(folders[name] / "best.weights.h5")
        write_json(folders[name] / "params.json", {"backbone": "test_cnn", **settings})
        write_json(folders[name] / "metrics.json", {"image_size": size})
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        paths.append(str(tmp_path / f"{index}.jpg"))
        cv2.imwrite(paths[-1], rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    labels = np.arange(6) % 3
    predicted = np.array([0, 1, 2, 5, 6, 7])  # three right, three wrong
    sure = np.full((6, 10), 0.02) + 0.78 * np.eye(10)[predicted]
    probs = {name: sure for name in folders}
    mistakes = pd.DataFrame({"path": paths[:2], "predicted": [5, 7]})
    explained = explain_runs(folders, probs, labels, [f"{i}.jpg" for i in range(6)], paths, 2,
                             ensemble_mistakes=mistakes)  # fmt: skip
    assert [(run.name, run.image_size) for run in explained] == [("03_a", 40), ("04_b", 48)]
    for run in explained:
        assert len(run.panels) == len(run.titles) == 2 * 2 * 2  # (mistakes + right) x 2, each photo and its map
        assert {panel.shape for panel in run.panels} == {(run.image_size, run.image_size, 3)}
        assert run.titles[1] == "Grad-CAM" and run.titles[0].startswith(("mistake: ", "right: "))
        assert len(run.ensemble_overlays) == 2 and run.ensemble_overlays[0].dtype == np.uint8
