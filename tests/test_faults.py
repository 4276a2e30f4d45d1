"""Faults during training: out of accelerator memory and a full disk while writing a checkpoint."""

import errno

import keras
import numpy as np
import pytest

from lib.callbacks import save_weights_atomic
from lib.train import explain_out_of_memory


class ResourceExhaustedError(Exception):
    """Stands in for tf.errors.ResourceExhaustedError (matched by name, so no TensorFlow import)."""


@pytest.mark.parametrize(
    "error",
    [
        ResourceExhaustedError("OOM when allocating tensor with shape[32,2048,10,10]"),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."),  # JAX/XLA
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),  # torch
    ],
)
def test_out_of_memory_suggests_the_parameters(error):
    message = explain_out_of_memory(error, batch_size=32, image_size=512)
    for words in ("batch_size", "image_size", "gradient_accumulation_steps", "32", "512"):
        assert words in message


def test_out_of_memory_under_a_strategy_names_the_per_replica_batch():
    message = explain_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory"), 16, 448, replicas=2)
    assert "batch_size=16 per replica (global 32 over 2 replicas), image_size=448" in message
    assert "tf.distribute cannot accumulate" in message


def test_other_errors_are_left_alone():
    assert explain_out_of_memory(ValueError("shapes do not match"), batch_size=32, image_size=299) is None


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.build((None, 3))
    return model


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / "best.weights.h5"
    save_weights_atomic(model, path)
    before = path.read_bytes()
    model.layers[0].kernel.assign(np.ones((3, 2)))

    def disk_full(self, filepath, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", disk_full)
    with pytest.raises(OSError, match="previous one is intact") as error:
        save_weights_atomic(model, path)
    assert "No space left on device" in str(error.value)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
