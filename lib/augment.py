"""Augmentation presets: albumentations on the CPU (per image), Keras preprocessing layers in the model, and
CutMix/MixUp on whole training batches."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import albumentations as A  # lib/__init__ has already turned off its PyPI version check
import cv2
import numpy as np

from lib.choices import PRESETS, Mix

# Reflected borders look like a plausible street scene; black wedges would be a learnable artefact.
_BORDER = cv2.BORDER_REFLECT_101


def _check(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}: use one of {', '.join(PRESETS)}")
    return name


@dataclass(frozen=True)
class Geometry:
    """A preset's geometric part: horizontal flip, then an affine about the image centre."""

    flip: float  # probability of a horizontal flip
    p: float  # probability of the affine
    translate: float  # largest shift, as a fraction of the side
    scale: tuple[float, float]
    rotate: float  # largest rotation, degrees
    shear: float = 0.0  # largest shear, degrees


# Medium is roughly the seed's ImageDataGenerator (rotation 20, shift 0.1, zoom 0.1, flip).
GEOMETRY = {
    "light": Geometry(flip=0.5, p=0.5, translate=0.05, scale=(0.95, 1.05), rotate=5),
    "medium": Geometry(flip=0.5, p=0.5, translate=0.1, scale=(0.9, 1.1), rotate=15),
    "heavy": Geometry(flip=0.5, p=0.8, translate=0.15, scale=(0.8, 1.2), rotate=20, shear=8),
}


def geometric_transforms(name: str) -> list:
    """The preset's flip + A.Affine (what lib.pipeline does in one fused warp, see sample_warp)."""
    _check(name)
    if name == "none":
        return []
    g = GEOMETRY[name]
    return [
        A.HorizontalFlip(p=g.flip),
        A.Affine(
            translate_percent=(-g.translate, g.translate),
            scale=g.scale,
            rotate=(-g.rotate, g.rotate),
            shear=(-g.shear, g.shear) if g.shear else 0.0,
            border_mode=_BORDER,
            p=g.p,
        ),
    ]


def photometric_transforms(name: str) -> list:
    """The preset's pixel-value transforms (colour, blur, noise, dropout), applied after the geometry."""
    _check(name)
    if name == "none":
        return []
    if name == "light":
        return [A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3)]
    if name == "medium":
        # Only transforms that cost little next to the 640x480 JPEG decode (about 1.1 ms on one core), so the
        # default training pipeline keeps up with decoding alone. Measured at 299 px on the 2-core CPU:
        # RandomBrightnessContrast 0.03 ms (a lookup table), GaussianBlur 0.12 ms, but HueSaturationValue
        # 0.38 ms (an RGB->HSV->RGB round trip), MotionBlur 0.2 ms plus 0.3 ms of Python to build its kernel,
        # GaussNoise more than the decode. Those stay in heavy.
        return [
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ]
    return [  # heavy
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
        A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=25, val_shift_limit=15, p=0.5),
        A.OneOf([A.RandomGamma(gamma_limit=(70, 130), p=1.0), A.CLAHE(clip_limit=2.0, p=1.0)], p=0.3),
        A.ToGray(p=0.05),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=(3, 7), p=1.0),
                A.MotionBlur(blur_limit=(3, 7), p=1.0),
                A.GaussNoise(std_range=(0.03, 0.1), noise_scale_factor=0.5, p=1.0),
                A.ImageCompression(quality_range=(40, 90), p=1.0),
            ],
            p=0.4,
        ),
        A.CoarseDropout(
            num_holes_range=(1, 6), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), fill=0, p=0.5
        ),
    ]


def albumentations_transforms(name: str) -> list:
    """All transforms of a preset, for an image already resized to the model size."""
    return geometric_transforms(name) + photometric_transforms(name)


def photometric_preset(name: str, seed: int | None = None) -> A.Compose | None:
    """A.Compose of the preset's photometric part only (lib.pipeline applies the geometry itself), or None."""
    transforms = photometric_transforms(name)
    return A.Compose(transforms, seed=seed) if transforms else None


def sample_warp(
    name: str, rng: np.random.Generator, width: int, height: int, size: int
) -> tuple[bool, np.ndarray | None]:
    """Draw the preset's geometry for a width x height image headed for size x size: (flip, matrix).

    matrix is a 2x3 cv2.warpAffine matrix that does the stretched resize, the flip and the preset's affine
    (same ranges as geometric_transforms) in one warp, or None when no affine was drawn: then the caller does a
    plain resize (3x cheaper than a warp) and flips if asked. One warp instead of resize + Affine means one
    interpolation instead of two and the resize for free (see bench.pipeline --explore)."""
    geometry = GEOMETRY.get(_check(name))
    if geometry is None:
        return False, None
    flip = bool(rng.random() < geometry.flip)
    if not rng.random() < geometry.p:
        return flip, None
    # Plain floats, not numpy 3x3 products: this runs per image under the GIL, next to the worker threads.
    # Resize (cv2.resize's pixel-centre convention: dst = (src + 0.5) * size / side - 0.5), then flip.
    sx, sy = size / width, size / height
    a, b, c = sx, 0.0, 0.5 * sx - 0.5
    d, e, f = 0.0, sy, 0.5 * sy - 0.5
    if flip:
        a, b, c = -a, -b, size - 1.0 - c
    # Then scale/rotate/shear about the output centre, and shift.
    scale = float(rng.uniform(*geometry.scale))
    angle = math.radians(float(rng.uniform(-geometry.rotate, geometry.rotate)))
    shear = math.tan(math.radians(float(rng.uniform(-geometry.shear, geometry.shear)))) if geometry.shear else 0.0
    shift_x, shift_y = (float(v) * size for v in rng.uniform(-geometry.translate, geometry.translate, 2))
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    l11, l12, l21, l22 = cos, cos * shear - sin, sin, sin * shear + cos  # rotation @ shear, scaled
    centre = (size - 1) / 2.0
    t1 = centre - (l11 + l12) * centre + shift_x
    t2 = centre - (l21 + l22) * centre + shift_y
    return flip, np.array(
        [
            [l11 * a + l12 * d, l11 * b + l12 * e, l11 * c + l12 * f + t1],
            [l21 * a + l22 * d, l21 * b + l22 * e, l21 * c + l22 * f + t2],
        ]
    )


def warp(image: np.ndarray, matrix: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Apply a sample_warp matrix (bilinear, reflected borders like the albumentations presets), into out."""
    if image.ndim == 3 and image.shape[2] == 3:
        # OpenCV's bilinear warp is vectorised for 4 channels: padding to RGBA, warping and dropping alpha
        # gives identical pixels in 0.48 ms instead of 0.66 ms (640x480 -> 299, one core).
        warped = cv2.warpAffine(
            cv2.cvtColor(image, cv2.COLOR_RGB2RGBA), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=_BORDER
        )
        return cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB, dst=out)
    return cv2.warpAffine(image, matrix, (size, size), dst=out, flags=cv2.INTER_LINEAR, borderMode=_BORDER)


def albumentations_preset(name: str, seed: int | None = None) -> A.Compose | None:
    """An A.Compose for the preset, or None for 'none' (the caller skips augmentation entirely)."""
    transforms = albumentations_transforms(name)
    if not transforms:
        return None
    return A.Compose(transforms, seed=seed)


def keras_augmentation(name: str, seed: int | None = None):
    """A keras.Sequential of preprocessing layers for the preset (run inside the model, on the accelerator),
    or None for 'none'. Expects float input in 0-255 (uint8 batches cast to float); active only in training."""
    import keras

    _check(name)
    if name == "none":
        return None
    layers = keras.layers
    if name == "light":
        stack = [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.015, fill_mode="reflect", seed=seed),
            layers.RandomZoom(0.05, fill_mode="reflect", seed=seed),
        ]
    elif name == "medium":
        stack = [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.04, fill_mode="reflect", seed=seed),  # fraction of 2*pi: about 15 degrees
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
            layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
        ]
    else:
        stack = [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.055, fill_mode="reflect", seed=seed),
            layers.RandomZoom(0.2, fill_mode="reflect", seed=seed),
            layers.RandomTranslation(0.15, 0.15, fill_mode="reflect", seed=seed),
            layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
        ]
    return keras.Sequential(stack, name=f"augment_{name}")


MIX_STREAM = 1  # the random stream of a batch's mixing, apart from its per-photo augmentation (stream 0)


class BatchMixer:
    """CutMix and MixUp on a whole training batch, by keras.layers.CutMix and keras.layers.MixUp (which take
    {"images", "labels"}: they belong in the input pipeline, not in the model). Every draw comes from the batch's
    key alone (seed, epoch, batch): whether the batch is mixed, by which of the two, and the layer's own draws
    (its SeedGenerator is set from the key first), so a rerun and a run resumed after a kill mix the same photos
    the same way, whichever worker thread builds the batch. Each thread keeps its own pair of layers, as their
    SeedGenerator is state. The layers run on the CPU with the backend's ops; images come back uint8 (MixUp's blend
    rounded), labels as the float mix of the two photos' one-hot labels."""

    def __init__(self, mix: Mix | dict):
        self.mix = mix if isinstance(mix, Mix) else Mix(**mix)
        self._local = threading.local()

    def __getstate__(self):
        return {"mix": self.mix}

    def __setstate__(self, state):
        self.__init__(state["mix"])

    def _layer(self, kind: str):
        import keras

        layers = getattr(self._local, "layers", None)
        if layers is None:
            alpha = self.mix.cutmix
            layers = self._local.layers = {
                # CutMix's factor is the range its Beta's alpha is drawn from: (alpha, alpha) fixes it, so the area
                # share follows Beta(alpha, alpha) as in the CutMix paper (alpha 1: uniform).
                "cutmix": keras.layers.CutMix(factor=(alpha, alpha), seed=0) if alpha > 0 else None,
                "mixup": keras.layers.MixUp(alpha=self.mix.mixup, seed=0) if self.mix.mixup > 0 else None,
            }
        return layers[kind]

    def choose(self, rng: np.random.Generator) -> str | None:
        """ "cutmix", "mixup" or None (this batch stays unmixed), drawn from the batch's own generator."""
        mix = self.mix
        if not mix.active or rng.random() >= mix.p:
            return None
        if mix.cutmix > 0 and mix.mixup > 0:
            return "cutmix" if rng.random() < mix.switch else "mixup"
        return "cutmix" if mix.cutmix > 0 else "mixup"

    def __call__(self, images: np.ndarray, labels: np.ndarray, key: int) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [B, S, S, 3], labels float32 [B, K]) mixed, or returned as they are when the draw says so."""
        import keras

        rng = np.random.default_rng([key, MIX_STREAM])
        kind = self.choose(rng)
        if kind is None:
            return images, labels
        layer = self._layer(kind)
        state = layer.generator.state
        start = np.array([int(rng.integers(1 << 30)), 0], dtype=keras.backend.standardize_dtype(state.dtype))
        with keras.device("cpu:0"):  # a few element-wise ops per batch: not worth an accelerator round trip
            state.assign(start)
            mixed = layer({"images": images, "labels": labels}, training=True)
            mixed_images = keras.ops.convert_to_numpy(mixed["images"])
            mixed_labels = keras.ops.convert_to_numpy(mixed["labels"])
        return np.clip(np.rint(mixed_images), 0, 255).astype(np.uint8), mixed_labels.astype(np.float32)
