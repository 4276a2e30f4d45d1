"""Test-time augmentation: named transforms, pass plans, averaging, padding and the unreadable-image fallback."""

import numpy as np
import pytest

from lib import NUM_CLASSES
from lib.predict import TTA_TRANSFORMS, TTABatches, apply_fallback, class_prior, predict_probs, tta_plan, tta_variant


def left_bright_model():
    """Predicts class 1 when the top-left pixel is bright, class 0 otherwise."""
    import keras

    inputs = keras.Input((None, None, 3), dtype="uint8")
    bright = keras.layers.Lambda(lambda x: keras.ops.cast(x[:, 0, 0, 0] > 127, "int32"))(inputs)
    return keras.Model(inputs, keras.layers.Lambda(lambda k: keras.ops.one_hot(k, NUM_CLASSES))(bright))


class Batches:
    def __init__(self, images, batch_size):
        self.images, self.batch_size = images, batch_size

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        return self.images[index * self.batch_size : (index + 1) * self.batch_size]


def left_bright_images(count, size=16):
    images = np.zeros((count, size, size, 3), np.uint8)
    images[:, :, : size // 2] = 255
    return images


def test_identity_and_hflip_are_averaged():
    model = left_bright_model()
    probs = predict_probs(model, Batches(left_bright_images(3), 4), ["identity", "hflip"], progress=False)
    assert np.allclose(probs[:, :2], 0.5) and np.allclose(probs.sum(axis=1), 1)
    identity_only = predict_probs(model, Batches(left_bright_images(3), 4), ["identity"], progress=False)
    assert np.allclose(identity_only[:, 1], 1)


def test_pass_count_and_padding():
    """10 passes over 5 images in batches of 4: 2 batches x 10 passes, each of the full batch size; each batch is
    decoded once."""
    plan = tta_plan(["identity", "hflip", "crop"], 10)
    reads = []

    class Counted(Batches):
        def __getitem__(self, index):
            reads.append(index)
            return super().__getitem__(index)

    batches = TTABatches(Counted(left_bright_images(5), 4), plan)
    assert [len(batches[i]) for i in range(len(batches))] == [4] * 20
    assert batches.counts == {0: 4, 1: 1} and reads == [0, 1]
    probs = predict_probs(left_bright_model(), Batches(left_bright_images(5), 4), [n for n, _ in plan[:3]], 10, False)
    assert probs.shape == (5, NUM_CLASSES) and np.allclose(probs.sum(axis=1), 1)


def test_plan_repeats_with_new_strengths():
    plan = tta_plan(["crop", "brightness"], 5)
    assert [name for name, _ in plan] == ["crop", "brightness", "crop", "brightness", "crop"]
    assert len({strength for _, strength in plan}) == 3
    with pytest.raises(ValueError, match="Unknown TTA"):
        tta_plan(["rotate180"])


@pytest.mark.parametrize("name", TTA_TRANSFORMS)
def test_every_transform_keeps_shape_and_dtype(name):
    batch = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    out = tta_variant(batch, name)
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert np.array_equal(out, batch) == (name == "identity")


def test_fallback_uses_the_training_prior():
    prior = class_prior([0, 0, 0, 1])
    probs = apply_fallback(np.full((3, NUM_CLASSES), 0.1), np.array([True, False, True]), prior)
    assert probs[1].argmax() == 0 and np.isclose(probs[1, 0], 0.75) and np.allclose(probs[0], 0.1)
