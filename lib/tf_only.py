"""Everything that needs TensorFlow itself lives here, so the rest of lib also runs under KERAS_BACKEND=jax."""

from __future__ import annotations


def set_thread_pools(intra_op: int, inter_op: int) -> tuple[int, int]:
    """TensorFlow's two thread pools, set before its runtime starts (a started runtime keeps its own: an
    interactive rerun of the set-up cell). Returns the pools in effect (0: TensorFlow's default, every core)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # "... cannot be modified after initialization"
        pass
    return thread_pools()


def thread_pools() -> tuple[int, int]:
    """(intra-op, inter-op) threads TensorFlow was told to use; 0 means its own default (all cores)."""
    import tensorflow as tf

    return (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


def apply_generator_memory_patch() -> None:
    """Run tf.data's generator op once, now: its first construction in a process calls glibc's mallopt to set
    M_TRIM_THRESHOLD to 128 KB (TensorFlow logs "Memory patch applied"), which also freezes glibc's mmap
    threshold. Keras feeds every PyDataset (training, TTA) through that op, so this happens anyway; doing it here
    lets the caller set its own thresholds after it, for the rest of the process."""
    import tensorflow as tf

    for _ in tf.data.Dataset.from_generator(lambda: iter((0,)), output_signature=tf.TensorSpec((), tf.int32)):
        pass


def split_cpu(count: int) -> None:
    """Show the CPU as `count` logical devices (must run before TensorFlow's runtime starts)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:  # "Virtual devices cannot be modified after being initialized"
        raise RuntimeError(
            f"Cannot split the CPU into {count} devices: TensorFlow has already started in this process. "
            f"Set CARS_VIRTUAL_DEVICES={count} before starting Python (or restart the kernel)."
        ) from err


def tensorflow_device_list(tpu_build: bool = False) -> list[tuple]:
    """(platform, name, handle, compute capability) per device TensorFlow can train on: its GPUs, else TPU cores
    (`tpu_build`: a TPU build of TensorFlow is installed), else its logical CPU devices."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        devices = []
        for index, gpu in enumerate(gpus):
            details = tf.config.experimental.get_device_details(gpu)
            capability = details.get("compute_capability")
            devices.append(
                ("gpu", details.get("device_name", "GPU"), f"/device:GPU:{index}",
                 float(f"{capability[0]}.{capability[1]}") if capability else None)
            )  # fmt: skip
        return devices
    if tpu_build and _tpu_resolver() is not None:
        return [("tpu", "TPU", tpu.name, None) for tpu in tf.config.list_logical_devices("TPU")]
    return [("cpu", "CPU", cpu.name, None) for cpu in tf.config.list_logical_devices("CPU")]


_TPU = {}


def _tpu_resolver():
    """The local TPU, connected and initialised once; None without one. Called only where a TPU build of
    TensorFlow is installed (Kaggle's TPU image has none, so this path is untested by the project)."""
    import tensorflow as tf

    if "resolver" not in _TPU:
        _TPU["resolver"] = None
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _TPU["resolver"] = resolver
        except (ValueError, RuntimeError, tf.errors.OpError):
            pass
    return _TPU["resolver"]


def set_default_strategy(strategy: str, devices: list[str]) -> None:
    """Make a tf.distribute strategy the default for every model built and compiled from now on (Keras 3 builds
    and compiles in the default strategy's scope), or restore the default for "none"."""
    import tensorflow as tf

    if strategy == "none":
        tf.distribute.experimental_set_strategy(None)
    elif strategy == "mirrored":
        tf.distribute.experimental_set_strategy(tf.distribute.MirroredStrategy(devices))
    elif strategy == "tpu":
        tf.distribute.experimental_set_strategy(tf.distribute.TPUStrategy(_tpu_resolver()))
    else:
        raise ValueError(f"no tf.distribute strategy {strategy!r}")


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


def class_score_gradients(to_scores, maps, classes):
    """Grad-CAM's gradient on TensorFlow: d to_scores(maps)[i, classes[i]] / d maps[i] per image, as numpy (see
    lib.analysis.gradcam.class_score_gradients, which calls this)."""
    import tensorflow as tf

    maps = tf.convert_to_tensor(maps)
    with tf.GradientTape() as tape:
        tape.watch(maps)
        scores = tf.cast(to_scores(maps, training=False), tf.float32)
        summed = tf.reduce_sum(tf.gather(scores, tf.convert_to_tensor(classes, tf.int32), axis=1, batch_dims=1))
    return tape.gradient(summed, maps).numpy()
