"""The hardware found at run time and what it implies: backend, distribution strategy, precision and time budget."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.choices import LR_SCALINGS, PRECISIONS, STRATEGIES
from lib.versions import installed_version

# Kaggle's session limits (its notebook docs, as filed in the project's issue 11; not in the kaggle package):
# 12 h for GPU and CPU sessions, 9 h for TPU, "Save & Run All" included. The margin leaves time to save outputs.
KAGGLE_SESSION_HOURS = {"gpu": 12, "cpu": 12, "tpu": 9}
KAGGLE_MARGIN_MINUTES = 20
STRATEGY_NAMES = {  # how the one-line summary names each engine
    "none": "single device",
    "mirrored": "tf.distribute.MirroredStrategy",
    "tpu": "tf.distribute.TPUStrategy",
    "data_parallel": "keras.distribution.DataParallel",
}


@dataclass(frozen=True)
class Device:
    """One device as the backend lists it."""

    platform: str  # "cpu", "gpu" or "tpu"
    name: str  # e.g. "Tesla T4", "TPU v5 lite", "CPU"
    handle: str = ""  # what the engine is given: "/device:GPU:0" (TensorFlow), "gpu:0" (keras.distribution)
    compute_capability: float | None = None  # CUDA GPUs: 7.5 for a T4, 8.0 for an A100


@dataclass(frozen=True)
class DistributionPlan:
    """Which engine spreads training over which devices. `devices` are the replicas (one for "none")."""

    strategy: str  # "none", "mirrored", "tpu" or "data_parallel"
    backend: str
    devices: tuple[Device, ...]

    @property
    def replicas(self) -> int:
        return len(self.devices)

    @property
    def platform(self) -> str:
        return self.devices[0].platform

    def describe(self, batch_size: int, precision: str) -> str:
        """E.g. `Devices: 2 x Tesla T4 (tf.distribute.MirroredStrategy), global batch 64 = 32 per replica, ...`."""
        names = sorted({device.name for device in self.devices})
        batch = (
            f"global batch {batch_size * self.replicas} = {batch_size} per replica"
            if self.replicas > 1
            else f"batch {batch_size}"
        )
        return (
            f"Devices: {self.replicas} x {' + '.join(names)} ({STRATEGY_NAMES[self.strategy]}), {batch}, "
            f"precision {precision}"
        )

    def record(self, batch_size: int) -> dict:
        """What params.json and metrics.json keep: the run's fingerprint changes with the replica count."""
        return {
            "strategy": self.strategy,
            "backend": self.backend,
            "replicas": self.replicas,
            "devices": [device.name for device in self.devices],
            "batch_size_per_replica": batch_size,
            "global_batch_size": batch_size * self.replicas,
        }


# --------------------------------------------------------------------------- the backend, before Keras is imported


def tpu_hinted(environ=os.environ) -> bool:
    """A TPU may be attached: libtpu is installed (jax[tpu] brings it) or a TPU VM's variables are set. Cheap, and
    touches no accelerator, so it can run before the backend is chosen. (Unverified on Kaggle's image itself.)"""
    return importlib.util.find_spec("libtpu") is not None or any(
        environ.get(name) for name in ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")
    )


def jax_sees_tpu() -> bool:
    if importlib.util.find_spec("jax") is None:
        return False
    import jax

    try:
        return any(device.platform == "tpu" for device in jax.devices())
    except RuntimeError:
        return False


def tensorflow_tpu_build() -> bool:
    """A TPU build of TensorFlow is installed (Kaggle's TPU image ships tensorflow-cpu, so there it is not)."""
    return installed_version("tensorflow-tpu") is not None


def choose_backend(distribute: str, environ=os.environ, *, tpu: bool | None = None, tf_tpu: bool | None = None) -> str:
    """The Keras backend this run should use; sets KERAS_BACKEND=jax where it must, which only works before the
    first `import keras`. On a TPU without a TPU build of TensorFlow, `auto` and `tpu` switch to JAX (Keras on
    JAX is how Kaggle's TPU image runs Keras); `data_parallel` is keras.distribution, which needs JAX."""
    if distribute not in STRATEGIES:
        raise ValueError(f"distribute={distribute!r}; choose one of {', '.join(STRATEGIES)}")
    chosen = environ.get("KERAS_BACKEND", "").strip() or None
    tf_tpu = tensorflow_tpu_build() if tf_tpu is None else tf_tpu
    if "keras" in sys.modules:
        import keras

        backend = keras.backend.backend()  # fixed at Keras's import
        if backend == "tensorflow" and distribute in ("auto", "tpu") and tpu_hinted(environ) and not tf_tpu:
            print(
                "WARNING: a TPU seems attached, but Keras was already imported on TensorFlow, which has no TPU "
                "build here: restart the kernel and run from the top (the notebook switches to JAX before Keras)."
            )
        return backend
    if chosen:
        return chosen  # the user's explicit choice wins
    if distribute == "data_parallel":
        environ["KERAS_BACKEND"] = "jax"
        print("distribute='data_parallel' is keras.distribution: using Keras's JAX backend (KERAS_BACKEND=jax).")
        return "jax"
    if distribute in ("auto", "tpu"):
        tpu = (tpu_hinted(environ) and jax_sees_tpu()) if tpu is None else tpu
        if tpu and not tf_tpu:
            environ["KERAS_BACKEND"] = "jax"
            print("TPU found and TensorFlow here has no TPU build: using Keras's JAX backend (KERAS_BACKEND=jax).")
            return "jax"
    return "tensorflow"


# --------------------------------------------------------------------------- devices and the plan


def split_host_cpu(count: int) -> None:
    """Show the CPU as `count` devices, so distribution runs (and is tested) without accelerators. JAX takes
    XLA_FLAGS before it starts (lib/__init__ sets it from CARS_VIRTUAL_DEVICES); TensorFlow takes a logical
    device configuration before its runtime starts."""
    import keras

    if count > 1 and keras.backend.backend() == "tensorflow":
        from lib.tf_only import split_cpu

        split_cpu(count)


def visible_devices() -> list[Device]:
    """The devices the active Keras backend can use: accelerators if any, else the (possibly split) CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = []
        for device in jax.devices():
            platform = {"cuda": "gpu", "rocm": "gpu"}.get(device.platform, device.platform)
            capability = getattr(device, "compute_capability", None)
            devices.append(
                Device(
                    platform,
                    getattr(device, "device_kind", platform.upper()) if platform != "cpu" else "CPU",
                    f"{device.platform}:{device.id}",
                    float(capability) if capability else None,
                )
            )
        return devices
    if backend == "tensorflow":
        from lib.tf_only import tensorflow_device_list

        return [Device(*fields) for fields in tensorflow_device_list(tensorflow_tpu_build())]
    return [Device("cpu", "CPU", "cpu:0")]


def plan_distribution(distribute: str, backend: str, devices: list[Device], *, tf_tpu: bool = False):
    """The strategy for `distribute` on these devices; a ValueError in one line where they do not fit.

    `auto`: every visible accelerator (or every CPU device, when the CPU is split), through tf.distribute under
    TensorFlow and keras.distribution under JAX; one device: no strategy at all.
    """
    if distribute not in STRATEGIES:
        raise ValueError(f"distribute={distribute!r}; choose one of {', '.join(STRATEGIES)}")
    accelerators = [d for d in devices if d.platform != "cpu"] or [d for d in devices if d.platform == "cpu"]
    if not accelerators:
        raise ValueError("no device found")
    platform = accelerators[0].platform
    if distribute == "none" or (distribute == "auto" and len(accelerators) == 1):
        return DistributionPlan("none", backend, (accelerators[0],))
    if distribute == "tpu" and platform != "tpu":
        raise ValueError(f"distribute='tpu' but no TPU is visible ({len(accelerators)} x {platform.upper()})")
    if backend == "jax":
        if distribute == "mirrored":
            raise ValueError("distribute='mirrored' is tf.distribute (TensorFlow); under JAX use 'data_parallel'")
        return DistributionPlan("data_parallel", backend, tuple(accelerators))
    if backend == "tensorflow":
        if distribute == "data_parallel":
            raise ValueError("distribute='data_parallel' is keras.distribution on JAX: set KERAS_BACKEND=jax first")
        if platform == "tpu":
            if not tf_tpu:
                raise ValueError("a TPU needs a TPU build of TensorFlow, or Keras on JAX: set KERAS_BACKEND=jax")
            return DistributionPlan("tpu", backend, tuple(accelerators))
        return DistributionPlan("mirrored", backend, tuple(accelerators))
    raise ValueError(f"distribute={distribute!r} is not supported on the {backend} backend; use 'none'")


def apply_distribution(plan: DistributionPlan) -> None:
    """Make `plan` the default for every model built and compiled from now on (or clear it, for "none"):
    tf.distribute's default strategy under TensorFlow, keras.distribution's under JAX."""
    import keras

    if plan.backend == "tensorflow":
        from lib.tf_only import set_default_strategy

        set_default_strategy(plan.strategy, [device.handle for device in plan.devices])
    elif plan.backend == "jax":
        distribution = None
        if plan.strategy == "data_parallel":
            distribution = keras.distribution.DataParallel(devices=[device.handle for device in plan.devices])
        keras.distribution.set_distribution(distribution)


def synchronize_batchnorm(model, plan: DistributionPlan) -> int:
    """Under a tf.distribute strategy, every BatchNormalization layer computes its batch statistics over the global
    batch (Keras's `synchronized`), not each replica's share: the model then trains as on one device with the
    global batch. Under JAX's DataParallel one program sees the whole sharded batch, so they already are global.
    Returns the number of layers changed."""
    import keras

    if plan.backend != "tensorflow" or plan.replicas == 1:
        return 0
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def check_gradient_accumulation(plan: DistributionPlan, steps: int | None) -> None:
    """Keras 3's gradient accumulation applies its update inside a conditional, which tf.distribute cannot sync
    across replicas (measured: a RuntimeError from `merge_call` under MirroredStrategy). Say so before training."""
    if steps and steps > 1 and plan.backend == "tensorflow" and plan.replicas > 1:
        raise ValueError(
            f"gradient_accumulation_steps={steps} does not work under {STRATEGY_NAMES[plan.strategy]} (Keras "
            f"{installed_version('keras') or '?'}): set gradient_accumulation_steps=None (the global batch is already "
            f"{plan.replicas} x batch_size), or use distribute='none', or Keras on JAX (KERAS_BACKEND=jax)."
        )


def lr_scale(lr_scaling: str, replicas: int) -> float:
    """How a stage's `lr` (written for one replica's batch) follows the global batch of `replicas` replicas.

    none: unchanged. linear: x replicas (Goyal et al. 2017, for SGD). sqrt: x sqrt(replicas) (Malladi et al.
    2022, for Adam-type optimisers, which every stage of the series uses).
    """
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling={lr_scaling!r}; choose one of {', '.join(LR_SCALINGS)}")
    return {"none": 1.0, "linear": float(replicas), "sqrt": float(replicas) ** 0.5}[lr_scaling]


# --------------------------------------------------------------------------- precision and time budget


def resolve_precision(precision: str, devices: list[Device]) -> str:
    """`auto` by device: float32 on CPU; mixed_float16 on GPUs below compute capability 8.0 (T4 7.5, V100 7.0,
    P100 6.0), which have no fast bfloat16; mixed_bfloat16 on Ampere and newer GPUs and on TPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    platform = devices[0].platform if devices else "cpu"
    if platform == "tpu":
        return "mixed_bfloat16"
    if platform == "gpu":
        capability = min((d.compute_capability or 0.0) for d in devices)
        return "mixed_bfloat16" if capability >= 8.0 else "mixed_float16"
    return "float32"


def apply_precision(precision: str, devices: list[Device]) -> str:
    """Set the global Keras dtype policy (before building the model) and return its name."""
    import keras

    policy = resolve_precision(precision, devices)
    keras.config.set_dtype_policy(policy)
    return policy


def session_budget_minutes(value, platform: str, on_kaggle: bool) -> float | None:
    """`time_budget_minutes` as used: a number is kept; "auto" is Kaggle's session limit for this accelerator
    minus a margin (12 h GPU/CPU, 9 h TPU), and no limit elsewhere; 0 or None: no limit."""
    if value == "auto":
        if not on_kaggle:
            return None
        return KAGGLE_SESSION_HOURS[platform] * 60 - KAGGLE_MARGIN_MINUTES
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"time_budget_minutes={value!r}: use 'auto', a number of minutes, or 0 for no limit")
    return float(value)


# --------------------------------------------------------------------------- a line about the machine


def nvidia_gpu_present() -> bool:
    return Path("/proc/driver/nvidia").exists() or (
        shutil.which("nvidia-smi") is not None and os.system("nvidia-smi -L >/dev/null 2>&1") == 0
    )


def describe_backend(devices: list[Device]) -> str:
    """Keras version and backend, with a warning when an NVIDIA GPU is installed but the backend misses it."""
    import keras

    line = f"Keras {keras.__version__} on {keras.backend.backend()}"
    if all(d.platform == "cpu" for d in devices) and nvidia_gpu_present():
        line += (
            " -- WARNING: an NVIDIA GPU is present but the backend does not see it; "
            "install the GPU build with `make venv GPU=1` (requirements-gpu.txt)."
        )
    return line
