"""`python -m bench.pipeline`: input-pipeline throughput (img/s) vs ImageDataGenerator and decode-only, same files."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

import lib  # noqa: F401  (sets quiet-log environment variables first)
from lib.images import read_resized, resize_square

# The competition's photos: mostly 640x480, some 640x360, a few portrait.
IDG_NAME = "ImageDataGenerator (rot 20, shift/zoom 0.1, flip)"
SHAPES = (
    (480, 640),
    (480, 640),
    (480, 640),
    (480, 640),
    (480, 640),
    (480, 640),
    (480, 640),
    (360, 640),
    (360, 640),
    (640, 480),
)

PIPELINE_NAME = "pipeline, medium preset, no cache"

# Replicas the pipeline can feed. H100: Xception 299 bf16, compute only, batch 64, measured by this project on one H100.
H100_XCEPTION299_IMG_S = 1520
# T4: not measured, an estimate: the H100 rate scaled by peak dense FP16 tensor throughput, T4 65 TFLOPS
# (NVIDIA T4 datasheet) vs H100 SXM 989 TFLOPS (NVIDIA H100 datasheet), about 100 img/s.
T4_FP16_TENSOR_TFLOPS = 65
H100_SXM_FP16_TENSOR_TFLOPS = 989
T4_XCEPTION299_IMG_S = H100_XCEPTION299_IMG_S * T4_FP16_TENSOR_TFLOPS / H100_SXM_FP16_TENSOR_TFLOPS
KAGGLE_SESSION_CORES = 4  # a Kaggle GPU session's vCPUs: not stated by the kaggle package, so unverified
KAGGLE_T4_REPLICAS = 2  # Kaggle's "GPU T4 x2"
FEED_CORE_COUNTS = (KAGGLE_SESSION_CORES, 8, 16)


def make_jpegs(folder, count: int, seed: int = 0, start: int = 0) -> list[str]:
    """Synthetic photo-like JPEGs (smooth gradients, shapes, mild noise; about the file size of real photos),
    named start..start+count-1 (so several processes can fill one folder)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        height, width = SHAPES[index % len(SHAPES)]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        base = rng.uniform(40, 200, 3)
        image = np.empty((height, width, 3), np.float32)
        for channel in range(3):
            image[..., channel] = (
                base[channel]
                + 40 * np.sin(xs / rng.uniform(20, 90) + rng.uniform(0, 6))
                + 30 * np.cos(ys / rng.uniform(20, 90))
            )
        for _ in range(6):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(20, 160)), int(rng.integers(15, 90)))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
        image += rng.normal(0, 6, image.shape).astype(np.float32)
        path = folder / f"{index:06d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def _timed_with_cpu(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU per image stays meaningful when other programs
    share the cores, wall time does not."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_only(paths, size: int, workers: int) -> None:
    """cv2.imread (full-size decode) + the pipeline's resize of every file on `workers` threads: no
    augmentation, no batching, no checks. The floor that the pipeline's extra work is compared against."""

    def one(path):
        return resize_square(cv2.imread(path, cv2.IMREAD_COLOR), size)

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, paths, chunksize=8):
            pass


# Keras's PyDataset adapter ends every epoch by polling its emptied queue with a 0.1 s timeout
# (OrderedEnqueuer.stop). That idle wait is a fixed cost per epoch, not per image: 0.6% of a 15,561-image epoch
# at 1,000 img/s, but a third of a 320-image bench epoch. iterate_like_fit measures it so the rates leave it out.
EPOCH_END_WAITS: list[float] = []


def iterate_like_fit(sequence) -> int:
    """One epoch through Keras's own PyDataset adapter (the worker pool model.fit uses); returns images seen.
    Appends the adapter's idle epoch-end wait (after the last batch arrived) to EPOCH_END_WAITS."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(sequence, shuffle=False)
    adapter.on_epoch_begin()
    seen = 0
    last_batch_at = time.perf_counter()
    for batch in adapter.get_numpy_iterator():
        seen += len(batch[0])
        last_batch_at = time.perf_counter()
    adapter.on_epoch_end()
    EPOCH_END_WAITS.append(time.perf_counter() - last_batch_at)
    return seen


def run_image_data_generator(paths, labels, size: int, batch: int) -> None:
    from lib.tf_only import image_data_generator_flow

    with contextlib.redirect_stdout(io.StringIO()):  # its "Found N image filenames" line, once per round
        flow = image_data_generator_flow(paths, labels, image_size=size, batch_size=batch)
    for index in range(len(flow)):
        flow[index]


_TINY_MODELS: dict = {}


def tta_passes(paths, size: int, batch: int, passes: int, workers: int) -> str:
    """Inference with TTA: lib.predict.predict_probs (decode once per batch, `passes` named transforms, average)
    with a tiny conv model, so the figure is the input side of TTA plus a small model. Returns what was timed."""
    import keras

    from lib.pipeline import ImageSequence
    from lib.predict import TTA_TRANSFORMS, predict_probs

    model = _TINY_MODELS.get(size)
    if model is None:  # built and traced once, outside the timing of later rounds
        model = keras.Sequential(
            [
                keras.Input((size, size, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(4, 3, strides=4),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(lib.NUM_CLASSES, activation="softmax"),
            ]
        )
        model.predict_on_batch(np.zeros((batch, size, size, 3), np.uint8))
        _TINY_MODELS[size] = model
    sequence = ImageSequence(paths, image_size=size, batch_size=batch, workers=workers)
    predict_probs(model, sequence, tta=list(TTA_TRANSFORMS), passes=passes, progress=False)
    transforms = ", ".join(TTA_TRANSFORMS)
    return f"lib.predict.predict_probs, {passes} passes over {transforms}, tiny conv model (stride-4 conv, 4 filters)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--images", type=int, default=640, help="synthetic JPEGs to generate (default 640)")
    parser.add_argument("--size", type=int, default=299, help="target image size (default 299)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--workers", type=int, default=None, help="pipeline threads (default: lib.pipeline's)")
    parser.add_argument("--tta-passes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin repeats; the median is reported (default 5)")
    parser.add_argument("--skip-idg", action="store_true", help="skip ImageDataGenerator (needs TensorFlow)")
    parser.add_argument(
        "--explore",
        action="store_true",
        help="also time the design alternatives (PIL decode, processes, worker counts, ...)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="generate the JPEGs here and keep them")
    parser.add_argument("--tensorflow-malloc", action="store_true",
                        help="leave glibc's thresholds as TensorFlow sets them (as before the fix)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.images < args.batch:
        print(f"--images ({args.images}) must be at least --batch ({args.batch})", file=sys.stderr)
        return 1

    from lib import runtime as setup
    from lib.pipeline import DEFAULT_WORKERS, ImageSequence

    if args.tensorflow_malloc:
        setup.keep_glibc_thresholds = lambda: False
    runtime = setup.start_runtime()  # as training sets it up

    workers = args.workers or DEFAULT_WORKERS
    root = Path(tempfile.mkdtemp(prefix="cars-bench-")) if args.keep is None else args.keep
    try:
        started = time.perf_counter()
        paths = make_jpegs(root / "images", args.images)
        labels = np.arange(len(paths)) % lib.NUM_CLASSES
        megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
        print(
            f"{len(paths)} synthetic JPEGs ({megabytes / len(paths) * 1000:.0f} KB each, 640x480/640x360/"
            f"480x640) made in {time.perf_counter() - started:.1f}s; target {args.size}px, batch {args.batch}, "
            f"{workers} pipeline threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
        )
        n = len(paths)
        cv2.setNumThreads(1)  # every stage parallelises across images; OpenCV's own pool would oversubscribe
        decode_only(paths[:64], args.size, workers)  # warm the page cache and OpenCV

        def pipeline(**kwargs):
            return ImageSequence(
                paths,
                labels,
                image_size=args.size,
                batch_size=args.batch,
                augment="medium",
                workers=kwargs.pop("workers", workers),
                **kwargs,
            )

        cache_runs = []

        def cache_cold():
            cache_runs.append(pipeline(cache_dir=root / f"cache{len(cache_runs)}", shuffle=True))
            iterate_like_fit(cache_runs[-1])

        note = []
        # Build and trace the tiny model: a model.predict on a PyDataset, so every row below is measured as in
        # training, after TensorFlow's tf.data generator op has run (and applied its allocator setting).
        tta_passes(paths[: args.batch], args.size, args.batch, 1, workers)
        print(f"Rows measured after a model.predict on a PyDataset, as in training; {runtime.describe()}")
        stages = [("decode-only (cv2 imread+resize, threads)", lambda: decode_only(paths, args.size, workers))]
        if not args.skip_idg:
            stages.append((IDG_NAME, lambda: run_image_data_generator(paths, labels, args.size, args.batch)))
        stages += [
            (PIPELINE_NAME, lambda: iterate_like_fit(pipeline())),
            ("pipeline, medium, cache cold (1st epoch)", cache_cold),
            ("pipeline, medium, cache warm (2nd epoch)", lambda: iterate_like_fit(cache_runs[-1])),
            (
                f"inference, {args.tta_passes}-pass TTA (see note)",
                lambda: note.append(tta_passes(paths, args.size, args.batch, args.tta_passes, workers)),
            ),
        ]
        if args.explore:
            stages += explore_stages(paths, labels, args, workers)
        # Round-robin over --rounds and the median of each stage: on a shared machine other programs' load
        # comes and goes, and a stage that runs once can land in a busy or in a quiet moment.
        rates, cpu_per_image = {}, {}
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}:", flush=True)
            for name, function in stages:
                waits_before = len(EPOCH_END_WAITS)
                try:
                    wall, cpu = _timed_with_cpu(function)
                except ImportError as error:
                    print(f"  {name} skipped: {error}")
                    stages = [stage for stage in stages if stage[0] != name]
                    continue
                wall -= sum(EPOCH_END_WAITS[waits_before:])
                rate, cpu_ms = n / wall, cpu / n * 1000
                rates.setdefault(name, []).append(rate)
                cpu_per_image.setdefault(name, []).append(cpu_ms)
                print(f"  {name:<56} {rate:8.1f} img/s {cpu_ms:6.2f} CPU ms/img", flush=True)

        wall = {name: float(np.median(values)) for name, values in rates.items()}
        cpu_ms = {name: float(np.median(values)) for name, values in cpu_per_image.items()}
        decode_name = "decode-only (cv2 imread+resize, threads)"
        idg_rate = wall.get(IDG_NAME)
        print(
            f"\n| {args.size} px, batch {args.batch}, {n} images, median of {args.rounds} rounds | img/s "
            f"| x ImageDataGenerator | x decode-only | CPU ms/img | x decode-only by CPU |\n"
            f"| --- | ---: | ---: | ---: | ---: | ---: |"
        )
        for name, _ in stages:
            if name not in wall:
                continue
            versus_idg = f"{wall[name] / idg_rate:.2f}" if idg_rate else "n/a"
            if "processes" in name:  # worker processes' CPU time is not this process's
                cpu_text = "n/a | n/a"
            else:
                cpu_text = f"{cpu_ms[name]:.2f} | {cpu_ms[decode_name] / cpu_ms[name]:.2f}"
            print(f"| {name} | {wall[name]:.0f} | {versus_idg} | {wall[name] / wall[decode_name]:.2f} | {cpu_text} |")
        print(f"\nTTA row: {note[0] if note else 'n/a'}; img/s counts each image once.")
        if EPOCH_END_WAITS:
            print(
                f"Pipeline rows leave out Keras's idle wait at each epoch end (PyDataset adapter queue drain, "
                f"median {np.median(EPOCH_END_WAITS):.3f} s per epoch): a fixed cost per epoch, not per image."
            )
        print(
            "img/s: wall clock. CPU ms/img: this process's CPU time per image, all threads (the steadier "
            "figure when other programs share the cores); x decode-only by CPU = decode-only's CPU ms / this."
        )
        if PIPELINE_NAME in wall:
            # Threads share the cores: the pipeline ran on as many cores as it had threads, at most all of them.
            cpus = os.cpu_count() or 1
            print("\n" + feeding_report(wall[PIPELINE_NAME], min(workers, cpus), cpus, args.size))
        print(f"Total bench time {time.perf_counter() - started:.0f}s.")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def replicas_fed(pipeline_img_s: float, cores_measured: int, cores: int, per_replica_img_s: float) -> float:
    """How many replicas, each consuming per_replica_img_s, `cores` cores of the pipeline can feed, assuming
    its rate per core (pipeline_img_s measured on cores_measured) scales linearly with cores."""
    return pipeline_img_s / cores_measured * cores / per_replica_img_s


def feeding_report(pipeline_img_s: float, cores_measured: int, machine_cores: int, image_size: int = 299) -> str:
    """The "Feeding N replicas" section: a table of H100 and T4 replicas fed per core count, the T4 estimate's
    basis, and whether a Kaggle GPU T4 x2 session's cores feed both T4s."""
    per_core = pipeline_img_s / cores_measured
    notes: dict[int, list[str]] = {machine_cores: ["this machine"]}
    for cores in FEED_CORE_COUNTS:
        notes.setdefault(cores, [])
    notes[KAGGLE_SESSION_CORES].append("Kaggle GPU session, unverified")
    lines = [
        f"Feeding N replicas: {PIPELINE_NAME} at {image_size} px, {pipeline_img_s:.0f} img/s on {cores_measured} "
        f"core(s) = {per_core:.0f} img/s per core, assumed to scale linearly with cores",
        f"| cores | pipeline img/s | H100 replicas ({H100_XCEPTION299_IMG_S} img/s each) "
        f"| T4 replicas (~{T4_XCEPTION299_IMG_S:.0f} img/s each, estimate) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for cores, note in sorted(notes.items()):
        label = f"{cores} ({'; '.join(note)})" if note else str(cores)
        h100 = replicas_fed(pipeline_img_s, cores_measured, cores, H100_XCEPTION299_IMG_S)
        t4 = replicas_fed(pipeline_img_s, cores_measured, cores, T4_XCEPTION299_IMG_S)
        lines.append(f"| {label} | {per_core * cores:.0f} | {h100:.2f} | {t4:.2f} |")
    lines.append(
        f"H100: {H100_XCEPTION299_IMG_S} img/s, Xception 299 bf16 compute only, measured on one H100 by this project. "
        f"T4: an estimate, not measured: {H100_XCEPTION299_IMG_S} x {T4_FP16_TENSOR_TFLOPS}/"
        f"{H100_SXM_FP16_TENSOR_TFLOPS} (peak dense FP16 tensor TFLOPS, NVIDIA T4 and H100 SXM datasheets) "
        f"= {T4_XCEPTION299_IMG_S:.0f} img/s."
    )
    fed = replicas_fed(pipeline_img_s, cores_measured, KAGGLE_SESSION_CORES, T4_XCEPTION299_IMG_S)
    margin = fed / KAGGLE_T4_REPLICAS
    if margin >= 2:
        verdict = f"fed with margin ({margin:.1f}x what they need)"
    elif margin >= 1:
        verdict = f"fed, with little margin ({margin:.1f}x what they need)"
    else:
        verdict = f"NOT fed: the input pipeline would be the bottleneck ({margin:.1f}x what they need)"
    lines.append(
        f"Kaggle GPU T4 x2: {KAGGLE_SESSION_CORES} cores of this pipeline give ~{per_core * KAGGLE_SESSION_CORES:.0f} "
        f"img/s, {KAGGLE_T4_REPLICAS} T4s (the global batch split over {KAGGLE_T4_REPLICAS} replicas) need "
        f"~{KAGGLE_T4_REPLICAS * T4_XCEPTION299_IMG_S:.0f} img/s: {verdict}."
    )
    if image_size != 299:  # the replica rates are Xception's at 299 px
        lines.append(f"The replica rates are for 299 px; this pipeline ran at {image_size} px, so they do not apply.")
    return "\n".join(lines)


def explore_stages(paths, labels, args, workers) -> list:
    """Design alternatives, measured to choose the pipeline's defaults; kept so the choices can be re-checked."""
    from PIL import Image

    from lib.augment import albumentations_preset
    from lib.pipeline import ImageSequence

    size = args.size

    def pil_decode():
        def one(path):
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, paths, chunksize=8))

    def sequence(**kwargs):
        kwargs.setdefault("augment", "medium")
        kwargs.setdefault("workers", workers)
        return ImageSequence(paths, labels, image_size=kwargs.pop("image_size", size), batch_size=args.batch, **kwargs)

    full_compose = albumentations_preset("medium", seed=0)

    def unfused_medium():
        # The plain way: decode, resize, then the whole albumentations Compose (flip + Affine + photometric).
        def one(path):
            return full_compose(image=read_resized(path, size))["image"]

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, paths, chunksize=8))

    stages = [
        ("explore: PIL decode+resize, threads", pil_decode),
        ("explore: decode-only, 1 thread", lambda: decode_only(paths, size, 1)),
        (
            "explore: pipeline none (decode+resize via ImageSequence)",
            lambda: iterate_like_fit(sequence(augment="none")),
        ),
        ("explore: medium unfused (resize then full Compose)", unfused_medium),
        (
            "explore: pipeline medium, 2 processes",
            lambda: iterate_like_fit(sequence(workers=2, use_multiprocessing=True)),
        ),
    ]
    for count in sorted({1, 4} - {workers}):
        stages.append(
            (f"explore: pipeline medium, {count} threads", lambda c=count: iterate_like_fit(sequence(workers=c)))
        )
    for target in (224, 112):
        stages.append(
            (
                f"explore: pipeline none at {target}px (reduced decode)",
                lambda t=target: iterate_like_fit(sequence(augment="none", image_size=t)),
            )
        )
        stages.append((f"explore: decode-only at {target}px", lambda t=target: decode_only(paths, t, workers)))
    return stages


if __name__ == "__main__":
    sys.exit(main())
