"""lib.augment: presets run, keep shape/dtype, 'none' is identity, Keras layers run, bad names are refused."""

import cv2
import numpy as np
import pytest

from lib.augment import PRESETS, albumentations_preset, keras_augmentation, sample_warp, warp
from tests.fixed_random import FixedRandom


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


def _source():
    image = np.zeros((48, 80, 3), np.uint8)
    image[:, :20] = (255, 0, 0)
    image[10:30, 50:70] = (0, 255, 0)
    return image


def test_fused_warp_without_flip_or_affine_is_none():
    assert sample_warp("medium", FixedRandom([0.99, 0.99]), 80, 48, 32) == (False, None)
    assert sample_warp("medium", FixedRandom([0.0, 0.99]), 80, 48, 32) == (True, None)  # flip: caller's job
    assert sample_warp("none", FixedRandom([]), 80, 48, 32) == (False, None)


def test_fused_warp_with_neutral_affine_equals_the_plain_resize():
    flip, matrix = sample_warp("medium", FixedRandom([0.99, 0.0]), 80, 48, 32)  # scale 1, angle 0, shift 0
    assert not flip
    expected = cv2.resize(_source(), (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(warp(_source(), matrix, 32).astype(int) - expected).max() <= 2


def test_fused_warp_flip_equals_resize_then_flip():
    flip, matrix = sample_warp("medium", FixedRandom([0.0, 0.0]), 80, 48, 32)  # flip + neutral affine
    assert flip
    expected = cv2.flip(cv2.resize(_source(), (32, 32), interpolation=cv2.INTER_LINEAR), 1)
    assert np.abs(warp(_source(), matrix, 32).astype(int) - expected).max() <= 2


def test_fused_warp_random_draws_change_the_image_and_keep_shape():
    rng = np.random.default_rng(0)
    outputs = [sample_warp("heavy", rng, 80, 48, 32)[1] for _ in range(20)]
    warped = [warp(_source(), m, 32) for m in outputs if m is not None]
    assert warped and all(w.shape == (32, 32, 3) and w.dtype == np.uint8 for w in warped)
    plain = cv2.resize(_source(), (32, 32), interpolation=cv2.INTER_LINEAR)
    assert any(np.abs(w.astype(int) - plain).mean() > 5 for w in warped)


def test_warp_through_rgba_gives_the_pixels_of_a_plain_rgb_warp():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    matrices = [m for m in (sample_warp("heavy", rng, 80, 48, 32)[1] for _ in range(10)) if m is not None]
    assert matrices
    out = np.empty((32, 32, 3), np.uint8)
    for matrix in matrices:
        expected = cv2.warpAffine(image, matrix, (32, 32), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        assert warp(image, matrix, 32, out=out) is out
        assert np.array_equal(out, expected)
