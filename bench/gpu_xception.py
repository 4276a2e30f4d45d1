"""Xception 299 bf16 under Keras/JAX: end to end from JPEG files through lib.pipeline + model.fit on one GPU, versus
compute only on a batch already on the device; then the series' own training path (lib.distribute + lib.train) on
every GPU through keras.distribution. Run by bench/gpu.sh; tiny CPU check (2 virtual devices):
CARS_VIRTUAL_DEVICES=2 KERAS_BACKEND=jax python bench/gpu_xception.py --images 32 --size 96 --batch 4 --steps 2"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import lib`

import numpy as np  # noqa: E402


def _make_part(args):
    from bench.pipeline import make_jpegs

    folder, count, start = args
    return make_jpegs(folder, count, seed=start, start=start)


def make_jpegs_parallel(folder: Path, count: int, processes: int) -> list[str]:
    chunk = -(-count // processes)
    jobs = [(folder, min(chunk, count - start), start) for start in range(0, count, chunk)]
    with ProcessPoolExecutor(processes) as pool:
        return [path for part in pool.map(_make_part, jobs) for path in part]


def build_model(size: int, precision: str):
    import keras

    keras.mixed_precision.set_global_policy(precision)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # uint8 batches in, normalisation on device
    backbone = keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4096, help="synthetic 640x480-ish JPEGs (default 4096)")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed compute-only steps (default 40)")
    parser.add_argument("--epochs", type=int, default=2, help="end-to-end epochs; the last one is timed")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pipeline threads")
    parser.add_argument("--processes", action="store_true", help="pipeline worker processes instead of threads")
    parser.add_argument("--augment", default="medium")
    parser.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy (float32 for fp32)")
    parser.add_argument("--cache", action="store_true", help="also time an epoch with the memmap cache warm")
    parser.add_argument("--no-lib-path", dest="lib_path", action="store_false", help="skip the lib.train run")
    args = parser.parse_args(argv)

    import lib

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    steps_per_epoch = args.images // args.batch  # whole batches only: a partial batch would recompile
    count = steps_per_epoch * args.batch
    if steps_per_epoch < 2:
        print("--images must be at least 2 batches", file=sys.stderr)
        return 1
    paths = make_jpegs_parallel(root / "images", count, max(1, min(16, os.cpu_count() or 1)))
    labels = np.arange(count) % lib.NUM_CLASSES
    print(f"{count} JPEGs written in {time.perf_counter() - started:.1f}s", flush=True)

    # JAX and Keras only now: the JPEG writer processes above fork, and forking a process running JAX can hang.
    import jax
    import keras

    from lib.pipeline import ImageSequence

    device = jax.devices()[0]
    print(
        f"device: {device.platform} {getattr(device, 'device_kind', '')}; keras {keras.__version__} "
        f"({keras.backend.backend()}), jax {jax.__version__}; {os.cpu_count()} CPUs; size {args.size}, "
        f"batch {args.batch}, {args.precision}",
        flush=True,
    )

    model = build_model(args.size, args.precision)
    rng = np.random.default_rng(0)
    x_device = jax.device_put(rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8))
    y_device = jax.device_put(np.eye(lib.NUM_CLASSES, dtype=np.float32)[rng.integers(0, 10, args.batch)])
    compile_start = time.perf_counter()
    model.train_on_batch(x_device, y_device)  # compiles
    model.train_on_batch(x_device, y_device)
    print(f"compile + 2 steps: {time.perf_counter() - compile_start:.1f}s", flush=True)
    timed_start = time.perf_counter()
    for _ in range(args.steps):
        loss = model.train_on_batch(x_device, y_device)  # returns a host float: waits for the step
    compute_rate = args.steps * args.batch / (time.perf_counter() - timed_start)
    print(
        f"compute only (batch already on device, train_on_batch): {compute_rate:.0f} img/s "
        f"(loss {float(np.asarray(loss)):.3f})",
        flush=True,
    )

    class EpochTimer(keras.callbacks.Callback):
        """Times each epoch from its 3rd batch on, so the worker pool's start-up is not counted."""

        def __init__(self):
            super().__init__()
            self.rates = []

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                self.mark = time.perf_counter()
            self.last_batch, self.last = batch, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if self.last_batch > 2:
                self.rates.append((self.last_batch - 2) * args.batch / (self.last - self.mark))

    sequence = ImageSequence(
        paths,
        labels,
        image_size=args.size,
        batch_size=args.batch,
        augment=args.augment,
        shuffle=True,
        workers=args.workers,
        use_multiprocessing=args.processes,
        max_queue_size=max(16, 2 * args.workers),
        cache_dir=(root / "cache") if args.cache else None,
    )
    timer = EpochTimer()
    fit_start = time.perf_counter()
    epochs = args.epochs + (1 if args.cache else 0)
    model.fit(sequence, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=[timer], verbose=0)
    print(
        f"model.fit: {epochs} epochs of {steps_per_epoch} steps in {time.perf_counter() - fit_start:.1f}s; "
        f"per-epoch img/s {[round(rate) for rate in timer.rates]}",
        flush=True,
    )
    end_to_end = timer.rates[args.epochs - 1] if len(timer.rates) >= args.epochs else float("nan")
    mode = "processes" if args.processes else "threads"
    print(f"\n| Xception {args.size} {args.precision}, batch {args.batch}, {device.device_kind} | img/s |")
    print("| --- | ---: |")
    print(f"| compute only (synthetic batch on device) | {compute_rate:.0f} |")
    print(f"| end to end: JPEG -> lib.pipeline ({args.augment}, {args.workers} {mode}) -> fit | {end_to_end:.0f} |")
    if args.cache and len(timer.rates) > args.epochs:
        print(f"| end to end, memmap cache warm | {timer.rates[-1]:.0f} |")
    if args.lib_path:
        print(lib_training_path(paths, labels, args, root))
    print(f"\nend-to-end / compute-only = {end_to_end / compute_rate:.2f}; total {time.perf_counter() - started:.0f}s")
    return 0


def lib_training_path(paths, labels, args, root: Path) -> str:
    """The notebooks' training path on every device `auto` finds (keras.distribution.DataParallel over all GPUs):
    lib.models.build_model, then lib.train.train_stages for 2 epochs, all layers, batch --batch per replica.
    Returns the table row: img/s of the second epoch, from history.csv's `seconds`."""
    import keras
    import pandas as pd

    from lib import distribute
    from lib.models import build_model as build_series_model
    from lib.pipeline import ImageSequence
    from lib.runs import RunRecord
    from lib.train import TrainSettings, train_stages

    plan = distribute.plan_distribution("auto", keras.backend.backend(), distribute.visible_devices())
    distribute.apply_distribution(plan)
    keras.mixed_precision.set_global_policy(args.precision)
    print(plan.describe(args.batch, args.precision), flush=True)
    model = build_series_model("xception", weights=None, dense_units=0)
    frame = pd.DataFrame({"path": paths, "Category": labels})
    train, val = frame.iloc[: len(frame) * 7 // 8], frame.iloc[len(frame) * 7 // 8 :]

    def sequence(rows, size, batch, augment, shuffle):
        return ImageSequence(rows["path"].tolist(), rows["Category"].to_numpy(), image_size=size, batch_size=batch,
                             augment=augment, shuffle=shuffle, workers=args.workers, replicas=plan.replicas,
                             max_queue_size=max(16, 2 * args.workers))  # fmt: skip

    settings = TrainSettings(batch_size=args.batch, augment=args.augment, replicas=plan.replicas, verbose=0)
    stages = [{"name": "all", "trainable": "all", "epochs": 2, "image_size": args.size, "lr": 1e-3}]
    run = RunRecord(root / "lib-run")
    result = train_stages(model, stages, train, val, run, make_sequence=sequence, settings=settings)
    seconds = float(result.history["seconds"].iloc[-1])  # the second epoch: traced already
    rate = len(train) / seconds
    return (
        f"| lib.train on {plan.replicas} x {plan.devices[0].name} ({plan.strategy}), global batch "
        f"{args.batch * plan.replicas}, epoch 2 incl. validation | {rate:.0f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
