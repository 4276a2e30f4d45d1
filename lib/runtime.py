"""How this process computes: the cores it may use, the backend's threads, the input pipeline's workers and glibc's
allocator thresholds, set up once before the backend starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), and the trim threshold
# its dynamic rule pairs with it (twice the mmap threshold): what a process gets once it has freed a large block.
GLIBC_MMAP_THRESHOLD = 32 << 20
GLIBC_TRIM_THRESHOLD = 2 * GLIBC_MMAP_THRESHOLD
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (<malloc.h>)


def available_cores(affinity=None, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may really use: its CPU affinity (taskset, a container's cpuset), capped by a cgroup
    CPU quota (Docker's --cpus, a Kubernetes limit; cgroup v2 cpu.max or v1 cfs_quota_us), rounded up."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = len(affinity)
    quota = None
    try:
        limit, period = (cgroup_root / "cpu.max").read_text().split()
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = limit / period if limit > 0 else None
        except (OSError, ValueError):
            pass
    return max(1, min(cores, -int(-quota // 1)) if quota else cores)


def keep_glibc_thresholds() -> bool:
    """Set glibc's mmap and trim thresholds to the values its dynamic rule reaches (32 MB, 64 MB), so a decoded
    photo's buffer (640x480x3 = 900 KB) is reused from the heap instead of faulted in afresh every time. False
    where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD))


@dataclass(frozen=True)
class Runtime:
    """How this process computes: its cores, the backend's threads, the input pipeline's workers, the allocator."""

    backend: str
    cores: int
    threads: int  # the backend's intra-op threads (TensorFlow also gets as many inter-op threads)
    pipeline_workers: int
    allocator: str

    def describe(self) -> str:
        """E.g. `2 cores: 2 tensorflow threads, 2 pipeline workers, glibc mmap/trim thresholds 32/64 MB`."""
        return (
            f"{self.cores} core{'s' * (self.cores != 1)}: {self.threads} {self.backend} thread"
            f"{'s' * (self.threads != 1)}, {self.pipeline_workers} pipeline worker{'s' * (self.pipeline_workers != 1)}"
            f", {self.allocator}"
        )

    def record(self) -> dict:
        return {"cores": self.cores, "threads": self.threads, "pipeline_workers": self.pipeline_workers,
                "allocator": self.allocator}  # fmt: skip


def start_runtime(threads: int | str = "auto", virtual_devices: int = 1, workers: int = 0) -> Runtime:
    """The one place that sets up the backend's runtime, before it starts: the CPU split into `virtual_devices`,
    the thread pools (`threads`: "auto" is every available core), and on TensorFlow the glibc thresholds its
    tf.data generator op would otherwise freeze at 128 KB for the rest of the process (`make bench`: decoding
    1.4-2x slower, every photo faulted in afresh). JAX is left to its own threads unless `threads` is a number."""
    import keras

    from lib.distribute import split_host_cpu

    backend = keras.backend.backend()
    cores = available_cores()
    count = cores if threads in ("auto", None, 0) else int(threads)
    if count < 1:
        raise ValueError(f"threads={threads!r}: use 'auto' or a number of threads (1 or more)")
    allocator = "allocator untouched"
    if backend == "tensorflow":
        from lib.tf_only import apply_generator_memory_patch, set_thread_pools

        count = set_thread_pools(count, count)[0] or cores
        split_host_cpu(virtual_devices)
        apply_generator_memory_patch()
        if keep_glibc_thresholds():
            allocator = f"glibc mmap/trim thresholds {GLIBC_MMAP_THRESHOLD >> 20}/{GLIBC_TRIM_THRESHOLD >> 20} MB"
    elif backend == "jax" and threads not in ("auto", None, 0):
        flags = f"--xla_cpu_multi_thread_eigen={'true' if count > 1 else 'false'} intra_op_parallelism_threads={count}"
        if "intra_op_parallelism_threads" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    return Runtime(backend, cores, count, workers or default_workers(cores), allocator)


def default_workers(cores: int | None = None) -> int:
    """Input pipeline threads: one per available core, at most 8 (OpenCV's decode releases the GIL)."""
    return max(1, min(8, cores or available_cores()))
