"""Shared code for the sf-dl-car-classification notebook series: one module per concern."""

import os

# The one place for environment defaults. Every module of lib is imported through this file first, so they are
# set before albumentations or TensorFlow is imported: no PyPI version check, quieter logs.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CARS_VIRTUAL_DEVICES=N shows the CPU as N devices, to run (and test) distribution without accelerators. JAX
# reads XLA_FLAGS once, when it starts; TensorFlow is split later, in lib.distribute.split_host_cpu.
if os.environ.get("CARS_VIRTUAL_DEVICES", "").strip() not in ("", "0", "1"):
    _flags = [f"--xla_force_host_platform_device_count={int(os.environ['CARS_VIRTUAL_DEVICES'])}"]
    if os.environ.get("KERAS_BACKEND") == "jax":
        # XLA aborts the process when a CPU device's thread reaches a collective more than 40 s after the others;
        # on a busy machine split into devices that happens (seen in `make test-jax` beside other jobs).
        _flags.append("--xla_cpu_collective_call_terminate_timeout_seconds=600")
    for _flag in _flags:
        if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

NUM_CLASSES = 10
COMPETITION = "sf-dl-car-classification"

# Names competitors gave the classes; data, probabilities and submissions keep the numbers, plots and tables show
# these. The demo reuses the numbers only, so there the names are just labels.
CLASS_NAMES = (
    "Lada Priora",
    "Ford Focus",
    "Lada 2114 (Samara)",
    "Lada 2110",
    "Lada 2107",
    "Lada Niva",
    "Lada Kalina",
    "Lada 2109",
    "Volkswagen Passat",
    "Lada 21099",
)


def class_display_name(category: int) -> str:
    """A class as plots and tables show it: its number and name, e.g. "0 Lada Priora"."""
    return f"{int(category)} {CLASS_NAMES[int(category)]}"
