"""TensorFlow-free input pipeline: keras.utils.PyDataset of uint8 RGB batches with OpenCV decode and augmentation."""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
from pathlib import Path

import cv2
import keras
import numpy as np

import lib
from lib.augment import GEOMETRY, BatchMixer, photometric_preset, sample_warp, warp
from lib.images import ImageReadError, read_rgb, resize_square, warn_unreadable
from lib.runtime import default_workers

# Threads by default: OpenCV's decode/resize/warp release the GIL, and threads skip pickling every batch back
# from a worker process. `python -m bench.pipeline --explore` measured 2 processes no faster than 2 threads here;
# use_multiprocessing=True stays available (the sequence and its memmap cache pickle safely).
DEFAULT_WORKERS = default_workers()  # one per core this process may use (its affinity and cgroup quota), at most 8


def _cache_key(paths: list[str], image_size: int) -> str:
    """Hash of the file list, each file's size and mtime, and the image size: a changed file makes a new cache."""
    digest = hashlib.sha1(f"size={image_size}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\tmissing\n".encode())
    return digest.hexdigest()[:16]


class ResizedImageCache:
    """On-disk uint8 memmap of images already decoded and resized to one size, filled lazily.

    Two files in cache_dir: images_<size>_<key>.u8 ([N, S, S, 3]) and .done (one byte per image, set after the
    image is written). Shared by threads and, through the page cache, by worker processes; each process maps
    the files itself (a memmap must not be pickled into a worker as a copy).
    """

    def __init__(self, cache_dir, paths: list[str], image_size: int):
        self.image_size = image_size
        self.count = len(paths)
        key = _cache_key(paths, image_size)
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.images_path = folder / f"images_{image_size}_{key}.u8"
        self.done_path = folder / f"images_{image_size}_{key}.done"
        shape = (self.count, image_size, image_size, 3)
        if not self.images_path.exists() or self.images_path.stat().st_size != int(np.prod(shape)):
            # Sparse files: creation is instant, disk fills only as images are written.
            with open(self.done_path, "wb") as handle:
                handle.truncate(self.count)
            with open(self.images_path, "wb") as handle:
                handle.truncate(int(np.prod(shape)))
        self._shape = shape
        self._maps = None
        self._pid = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_maps=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _arrays(self):
        if self._maps is None or self._pid != os.getpid():
            with self._lock:
                if self._maps is None or self._pid != os.getpid():
                    images = np.memmap(self.images_path, dtype=np.uint8, mode="r+", shape=self._shape)
                    done = np.memmap(self.done_path, dtype=np.uint8, mode="r+", shape=(self.count,))
                    self._maps, self._pid = (images, done), os.getpid()
        return self._maps

    def get(self, index: int, out: np.ndarray) -> bool:
        """Copy image `index` into out and return True when it is cached."""
        images, done = self._arrays()
        if not done[index]:
            return False
        out[...] = images[index]
        return True

    def put(self, index: int, image: np.ndarray) -> None:
        images, done = self._arrays()
        images[index] = image
        done[index] = 1

    def filled(self) -> int:
        return int(np.count_nonzero(self._arrays()[1]))


class ImageSequence(keras.utils.PyDataset):
    """Batches (x uint8 [B, S, S, 3] RGB, y one-hot float32 [B, NUM_CLASSES]) from image files, or x alone
    when labels is None. The last partial batch is kept, so prediction never drops a row. An unreadable file
    gives a blank (zeros) image and one warning. shuffle reorders deterministically from seed + epoch.

    Per image: decode (reduced-size JPEG decode when the file is >= 2x the target) -> one cv2.warpAffine that does
    the stretched resize to S x S together with the preset's random flip and affine (plain resize, and a flip if
    drawn, when no affine was drawn) -> the preset's photometric albumentations at S. With cache_dir, resized
    images are kept in a uint8 memmap so later epochs skip the decode; the whole preset still runs every epoch.
    Augmentation randomness is derived from (seed, epoch, batch), so it does not depend on worker scheduling.
    `mix` (a lib.choices.Mix or its dict): CutMix/MixUp over each whole batch after the per-photo augmentation
    (lib.augment.BatchMixer), drawn from the same (seed, epoch, batch); the labels of a mixed batch are soft.

    `replicas` > 1: batches are split across that many devices, so every batch length must be a multiple of it.
    A shuffled (training) sequence leaves out the epoch's last `len(paths) % replicas` rows, which differ from
    epoch to epoch; any other labelled sequence pads its last batch with copies of zero sample weight and yields
    (x, y, sample_weight), so validation still counts every row exactly once.
    """

    def __init__(
        self,
        paths,
        labels=None,
        *,
        image_size: int,
        batch_size: int,
        augment: str = "none",
        shuffle: bool = False,
        seed: int = 0,
        cache_dir=None,
        workers: int = DEFAULT_WORKERS,
        use_multiprocessing: bool = False,
        max_queue_size: int = 16,
        replicas: int = 1,
        mix=None,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if workers > 1:
            # Parallelism is across images; OpenCV's own per-call thread pool would oversubscribe the cores.
            cv2.setNumThreads(1)
        self.paths = [str(path) for path in paths]
        if not self.paths:
            raise ValueError("ImageSequence needs at least one image path")
        if int(batch_size) < 1 or int(image_size) < 8:
            raise ValueError(f"batch_size must be >= 1 and image_size >= 8 (got {batch_size}, {image_size})")
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.replicas = int(replicas)
        if self.replicas < 1 or self.batch_size % self.replicas:
            raise ValueError(f"batch_size {batch_size} must be a multiple of replicas {replicas}")
        self.labels = None
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != len(self.paths):
                raise ValueError(f"{len(labels)} labels for {len(self.paths)} paths")
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError("labels must be a 1-D sequence of integer class ids")
            if labels.size and (labels.min() < 0 or labels.max() >= lib.NUM_CLASSES):
                raise ValueError(f"labels must be in 0..{lib.NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
            self.labels = labels.astype(np.int64)
        self.augment = augment
        self._photometric = photometric_preset(augment)  # validates the name early
        self._geometric = augment in GEOMETRY
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = ResizedImageCache(cache_dir, self.paths, self.image_size) if cache_dir else None
        self.mixer = BatchMixer(mix) if mix else None
        if self.mixer is not None and self.labels is None:
            raise ValueError("mix needs labels: CutMix and MixUp mix the labels with the photos")
        self._local = threading.local()
        self._warned: set = set()
        self._order = self._make_order()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_local"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _make_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.paths))
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.paths))
        return order[: len(order) - len(order) % self.replicas]

    @property
    def _pads(self) -> bool:
        return self.replicas > 1 and not self.shuffle and self.labels is not None

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self.batch_size)

    def batch_indices(self, index: int) -> np.ndarray:
        """Row indices (into paths/labels) of batch `index` in the current epoch's order."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        return self._order[index * self.batch_size : (index + 1) * self.batch_size]

    def batch_key(self, index: int) -> int:
        """The one number every random draw of batch `index` in this epoch comes from."""
        return (self.seed * 1_000_003 + self.epoch) * 1_000_003 + index

    def _random_for_batch(self, index: int):
        """(numpy Generator, per-thread photometric Compose or None), both seeded from (seed, epoch, batch)."""
        key = self.batch_key(index)
        rng = np.random.default_rng(key)
        if self._photometric is None:
            return rng, None
        local = self._local
        if getattr(local, "photometric", None) is None:
            local.photometric = photometric_preset(self.augment)
        local.photometric.set_random_state(rng, random.Random(key))
        return rng, local.photometric

    def _decode(self, row: int) -> np.ndarray | None:
        try:
            return read_rgb(self.paths[row], target_size=self.image_size)
        except ImageReadError as error:
            warn_unreadable(error.path, error.reason, self._warned)
            return None

    def load(self, row: int, out: np.ndarray, rng: np.random.Generator | None = None) -> bool:
        """Fill out ([S, S, 3]) with row's image: resized, or, given rng and a preset with geometry, with a
        random flip/affine drawn from rng. False (and zeros) when the file is unreadable."""
        size = self.image_size
        if self.cache is not None:
            if not self.cache.get(row, out):
                image = self._decode(row)
                if image is None:
                    out[...] = 0
                    return False
                resize_square(image, size, out=out)
                self.cache.put(row, out)
            source = out
        else:
            source = self._decode(row)
            if source is None:
                out[...] = 0
                return False
            if min(source.shape[:2]) >= 2 * size:
                source = resize_square(source, size)  # INTER_AREA first: a bilinear warp would alias
        flip, matrix = False, None
        if rng is not None and self._geometric:
            flip, matrix = sample_warp(self.augment, rng, source.shape[1], source.shape[0], size)
        if matrix is not None:
            if source is out:
                source = out.copy()  # warpAffine cannot work in place
            warp(source, matrix, size, out=out)
            return True
        if flip:
            cv2.flip(resize_square(source, size) if source is not out else out.copy(), 1, dst=out)
        elif source is not out:
            resize_square(source, size, out=out)
        return True

    def __getitem__(self, index: int):
        rows = self.batch_indices(index)
        size = self.image_size
        x = np.empty((len(rows), size, size, 3), dtype=np.uint8)
        rng, photometric = self._random_for_batch(index)
        for slot, row in enumerate(rows):
            if self.load(row, x[slot], rng) and photometric is not None:
                x[slot] = photometric(image=x[slot])["image"]
        if self.labels is None:
            return x
        y = np.zeros((len(rows), lib.NUM_CLASSES), dtype=np.float32)
        y[np.arange(len(rows)), self.labels[rows]] = 1.0
        if self.mixer is not None:
            x, y = self.mixer(x, y, self.batch_key(index))
        if not self._pads:
            return x, y
        missing = -len(rows) % self.replicas
        weight = np.concatenate([np.ones(len(rows), np.float32), np.zeros(missing, np.float32)])
        return np.concatenate([x, x[-1:].repeat(missing, 0)]), np.concatenate([y, y[-1:].repeat(missing, 0)]), weight

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's order and augmentation from (seed, epoch), whatever ran before (a resumed run)."""
        self.epoch = int(epoch)
        self._order = self._make_order()

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def fill_cache(self) -> int:
        """Decode every image into the cache now (otherwise it fills during the first epoch); returns the count."""
        if self.cache is None:
            raise ValueError("fill_cache needs cache_dir")
        scratch = np.empty((self.image_size, self.image_size, 3), dtype=np.uint8)
        for row in range(len(self.paths)):
            self.load(row, scratch)
        return self.cache.filled()
