"""lib.augment: presets run, keep shape/dtype, 'none' is identity, Keras layers run, bad names are refused."""
import numpy as np
import pytest

from lib.augment import PRESETS, albumentations_preset, keras_augmentation


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_none_is_identity():
    assert albumentations_preset("none") is None
    assert keras_augmentation("none") is None


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "none"])
def test_albumentations_preset_keeps_shape_and_changes_pixels(name, image):
    transform = albumentations_preset(name, seed=1)
    outputs = [transform(image=image)["image"] for _ in range(8)]
    assert all(out.shape == image.shape and out.dtype == np.uint8 for out in outputs)
    assert any(not np.array_equal(out, image) for out in outputs)


def test_preset_is_reproducible_with_seed(image):
    first = albumentations_preset("heavy", seed=3)(image=image)["image"]
    second = albumentations_preset("heavy", seed=3)(image=image)["image"]
    assert np.array_equal(first, second)


@pytest.mark.parametrize("name", ["light", "medium", "heavy"])
def test_keras_layers_run_in_training_mode(name, image):
    layers = keras_augmentation(name, seed=0)
    batch = np.stack([image, image]).astype("float32")
    out = np.asarray(layers(batch, training=True))
    assert out.shape == batch.shape
    assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3
    assert not np.allclose(out, batch)
    assert np.allclose(np.asarray(layers(batch, training=False)), batch)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="none, light, medium, heavy"):
        albumentations_preset("strong")
    with pytest.raises(ValueError, match="medium"):
        keras_augmentation("strong")
