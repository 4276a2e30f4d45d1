"""Everything that needs TensorFlow itself lives here, so the rest of lib also runs under KERAS_BACKEND=jax."""

from __future__ import annotations


def tensorflow_devices() -> set[str]:
    """Device kinds TensorFlow can use, e.g. {'CPU', 'GPU'}."""
    import tensorflow as tf

    return {device.device_type for device in tf.config.list_physical_devices()}


def tensorflow_gpus() -> list:
    """GPUs TensorFlow sees (empty on CPU-only installs)."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def image_data_generator_flow(paths, labels, *, image_size: int, batch_size: int, seed: int = 0):
    """The seed notebooks' baseline: ImageDataGenerator (rotation 20, shift 0.1, zoom 0.1, horizontal flip)
    .flow_from_dataframe, for the benchmark only. Keras 3 has no keras.preprocessing.image.ImageDataGenerator,
    so this is tf.keras (TensorFlow's bundled legacy Keras API)."""
    import pandas as pd
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=20, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1, horizontal_flip=True
    )
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": [str(int(v)) for v in labels]})
    return generator.flow_from_dataframe(
        frame,
        x_col="path",
        y_col="label",
        target_size=(image_size, image_size),
        batch_size=batch_size,
        class_mode="categorical",
        shuffle=True,
        seed=seed,
        validate_filenames=False,
    )
