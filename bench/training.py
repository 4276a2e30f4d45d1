"""`python -m bench.training`: training throughput of one model three ways on the same photos: compute only, fit on
the input pipeline, and lib.train.train_stages as the notebooks run it (callbacks, backups, best weights)."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import lib
from bench.pipeline import make_jpegs

# The demo's 03: Xception from scratch at 72 px, batch 16 (profiles/demo/03_xception.yaml); and a small backbone.
MODELS = {
    "xception": {"dense_units": 128, "dropout": 0.2},
    "mobilenetv3small": {"dense_units": 8, "dropout": 0.2},
    "test_cnn": {"dense_units": 8, "dropout": 0.2},  # traces in a second: the bench's own test
}
ROWS = ("compute only", "fit on the input pipeline", "as the notebook runs it")


@dataclass
class Epoch:
    seconds: float
    user: float
    system: float


def _usage() -> tuple[float, float, float]:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), used.ru_utime, used.ru_stime


def epoch_meter():
    """A Keras callback recording each epoch's wall time and this process's user and system CPU seconds."""
    import keras

    class EpochMeter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[Epoch] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = _usage()

        def on_epoch_end(self, epoch, logs=None):
            end = _usage()
            self.epochs.append(Epoch(*(b - a for a, b in zip(self._start, end))))

    return EpochMeter()


def build(name: str, seed: int = 0):
    import keras

    from lib.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model(name, weights=None, **MODELS[name])


def compile_for_training(model) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
        jit_compile=False,  # as the demo profile
    )


def decoded(frame: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The photos as uint8 [N, size, size, 3] in memory and one-hot labels: what compute only trains on."""
    from lib.images import read_resized

    images = np.stack([read_resized(path, size) for path in frame["path"]])
    return images, np.eye(lib.NUM_CLASSES, dtype="float32")[frame["Category"].to_numpy()]


def sequence(frame: pd.DataFrame, size: int, batch: int, augment: str, shuffle: bool):
    from lib.pipeline import ImageSequence

    return ImageSequence(frame["path"].tolist(), frame["Category"].to_numpy(), image_size=size, batch_size=batch,
                         augment=augment, shuffle=shuffle, seed=0)  # fmt: skip


def run_row(row: str, name: str, train, val, size: int, batch: int, epochs: int, augment: str, folder: Path):
    """One row: a fresh model trained `epochs` epochs; returns the epochs measured (wall, user, system)."""
    model = build(name)
    meter = epoch_meter()
    if row == "compute only":
        compile_for_training(model)
        x, y = decoded(train, size)
        validation = decoded(val, size)
        model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=validation, shuffle=False, verbose=0,
                  callbacks=[meter])  # fmt: skip
    elif row == "fit on the input pipeline":
        compile_for_training(model)
        validation = sequence(val, size, batch, "none", False)
        model.fit(sequence(train, size, batch, augment, True), validation_data=validation, epochs=epochs,
                  shuffle=False, verbose=0, callbacks=[meter])  # fmt: skip
    else:
        from lib.runs import RunRecord
        from lib.train import TrainSettings, train_stages

        stages = [{"name": "all", "trainable": "all", "epochs": epochs, "image_size": size, "optimizer": "adam",
                   "lr": 1e-3}]  # fmt: skip
        settings = TrainSettings(batch_size=batch, augment=augment, label_smoothing=0.1, jit_compile=False,
                                 verbose=0, early_stopping_patience=epochs)  # fmt: skip
        original_fit = model.fit  # train_stages builds its own callbacks: the meter rides along

        def fit_with_meter(*args, callbacks=(), **kwargs):
            return original_fit(*args, callbacks=[*callbacks, meter], **kwargs)

        model.fit = fit_with_meter
        train_stages(model, stages, train, val, RunRecord(folder / f"{name}-run"), make_sequence=sequence,
                     settings=settings)  # fmt: skip
    del model
    return meter.epochs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["xception", "mobilenetv3small"], choices=list(MODELS))
    parser.add_argument("--train", type=int, default=320, help="training photos (the demo's: 320)")
    parser.add_argument("--val", type=int, default=80, help="validation photos (the demo's: 80)")
    parser.add_argument("--size", type=int, default=72, help="image size (the demo's 03: 72)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4, help="per row; the first (tracing) is left out")
    parser.add_argument("--augment", default="light", help="the pipeline's preset (the demo's: light)")
    parser.add_argument("--threads", default="auto", help="the backend's threads (default: every available core)")
    parser.add_argument("--tensorflow-malloc", action="store_true",
                        help="leave glibc's thresholds as TensorFlow's generator op sets them (slow)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.epochs < 2:
        print("--epochs must be at least 2: the first one traces the model and is left out", file=sys.stderr)
        return 1
    from lib import runtime as setup

    if args.tensorflow_malloc:
        setup.keep_glibc_thresholds = lambda: False
    runtime = setup.start_runtime(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="cars-bench-training-"))
    try:
        paths = make_jpegs(folder / "images", args.train + args.val)
        frame = pd.DataFrame({"path": paths, "Category": np.arange(len(paths)) % lib.NUM_CLASSES})
        train, val = frame.iloc[: args.train].reset_index(drop=True), frame.iloc[args.train :].reset_index(drop=True)
        print(f"{len(paths)} synthetic 640x480-class JPEGs; {runtime.describe()}", flush=True)
        table = []
        for name in args.models:
            measured = {}
            for row in ROWS:
                epochs = run_row(row, name, train, val, args.size, args.batch, args.epochs, args.augment, folder)[1:]
                seconds = float(np.median([e.seconds for e in epochs]))
                measured[row] = seconds
                table.append((name, row, args.train / seconds, measured[ROWS[0]] / seconds,
                              np.median([e.user for e in epochs]), np.median([e.system for e in epochs])))  # fmt: skip
                print(f"  {name}, {row}: {args.train / seconds:.1f} img/s", flush=True)
        print(
            f"\n| {args.size} px, batch {args.batch}, {args.train} train + {args.val} validation photos, median of "
            f"epochs 2-{args.epochs} | img/s | x compute only | user CPU s/epoch | system CPU s/epoch |\n"
            "| --- | ---: | ---: | ---: | ---: |"
        )
        for name, row, rate, ratio, user, system in table:
            print(f"| {name}, {row} | {rate:.1f} | {ratio:.2f} | {user:.1f} | {system:.1f} |")
        print(
            "Each row trains a fresh model, validation included, and leaves out its first epoch (graph tracing). "
            "img/s counts training photos. Compute only: the photos decoded once into memory as uint8; the "
            f"pipeline rows decode and augment ({args.augment}) every epoch, as training does. CPU seconds are this "
            "process's, all threads."
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.exit(main())
