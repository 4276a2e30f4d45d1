"""Everything that needs TensorFlow itself lives here, so the rest of lib also runs under KERAS_BACKEND=jax."""
from __future__ import annotations


def tensorflow_devices() -> set[str]:
    """Device kinds TensorFlow can use, e.g. {'CPU', 'GPU'}."""
    import tensorflow as tf

    return {device.device_type for device in tf.config.list_physical_devices()}
