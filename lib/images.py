"""Robust, fast image reading: OpenCV decode (reduced-size JPEG when it helps), clear errors for bad files."""

from __future__ import annotations

import io
import os
import warnings

import cv2
import numpy as np

# Leading bytes of the formats we decode; anything else (HTML, text, HEIC, ...) is rejected with a reason.
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# JPEGs decode straight to RGB (IMREAD_COLOR_RGB, OpenCV >= 4.11): saves a full-size cvtColor per image.
# Older OpenCV (e.g. a GPU machine's own) decodes BGR and converts.
_DECODES_RGB = hasattr(cv2, "IMREAD_COLOR_RGB")
_RGB = cv2.IMREAD_COLOR_RGB if _DECODES_RGB else cv2.IMREAD_COLOR
_REDUCED_FLAGS = tuple(
    (factor, (flag & ~cv2.IMREAD_COLOR) | _RGB)
    for factor, flag in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    )
)


class ImageReadError(Exception):
    """An image file that cannot be decoded; `.path` names the file and `.reason` says why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's leading bytes, or None when they are not an image we read."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _not_image_reason(head: bytes) -> str:
    text = head[:256].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "not an image: HTML/XML text (a web page saved under an image name?)"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "HEIC/AVIF phone photo: convert it to JPEG"
    if head.startswith(b"version https://git-lfs"):
        return "not an image: a Git LFS pointer file"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]):
        return "not an image: a text file"
    return "not an image: unknown file format"


def _jpeg_complete(data: np.ndarray) -> bool:
    """True when the JPEG ends with its EOI marker (ignoring zero/newline padding some tools append)."""
    tail = data[-4096:].tobytes().rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def _read_bytes(path) -> tuple[np.ndarray, str]:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read file ({error.strerror or error})") from None
    if data.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    head = data[:64].tobytes()
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageReadError(path, _not_image_reason(head))
    return data, fmt


def _pil_verify_jpeg(path, data: np.ndarray) -> None:
    """Full Pillow decode of a JPEG that lacks its EOI marker: raises unless the data really is complete."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            im.load()
    except Exception as error:  # Pillow raises OSError/SyntaxError/ValueError for broken data
        raise ImageReadError(path, f"truncated or corrupt JPEG ({error})") from None


def _pil_decode(path, data: np.ndarray) -> np.ndarray:
    """Fallback decoder (GIF, odd TIFF/PNG modes) returning RGB uint8 with EXIF orientation applied."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except Exception as error:
        raise ImageReadError(path, f"cannot decode image ({error})") from None


def _jpeg_reduction(data: np.ndarray, target_size: int) -> int:
    """Largest libjpeg scale-down factor (8/4/2) that keeps both sides at least target_size, else 1."""
    width_height = _jpeg_header_size(data)
    if width_height is None:
        return 1
    short_side = min(width_height)
    for factor, _ in _REDUCED_FLAGS:
        if short_side // factor >= target_size:
            return factor
    return 1


def _jpeg_header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the JPEG SOF marker, scanning segment headers only (microseconds)."""
    raw = data[:65536].tobytes()
    pos = 2
    while pos + 9 < len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = (raw[pos + 2] << 8) | raw[pos + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = (raw[pos + 5] << 8) | raw[pos + 6]
            width = (raw[pos + 7] << 8) | raw[pos + 8]
            return width, height
        pos += 2 + length
    return None


def _alpha_over_white(image: np.ndarray) -> np.ndarray:
    """BGRA (any depth) -> BGR uint8 composited over white, so transparent areas do not turn black."""
    if image.dtype != np.uint8:
        image = (image / 257.0).round().astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    out = image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return out.round().astype(np.uint8)


def decode_rgb(path, data: np.ndarray, fmt: str, target_size: int | None = None) -> np.ndarray:
    """Decode already-read bytes to RGB uint8 HxWx3; see read_rgb."""
    if fmt == "JPEG" and not _jpeg_complete(data):
        _pil_verify_jpeg(path, data)  # no EOI marker: OpenCV would silently return a half-grey image
    image = None
    if fmt == "JPEG":
        flag = _RGB
        if target_size:
            factor = _jpeg_reduction(data, target_size)
            flag = dict(_REDUCED_FLAGS).get(factor, _RGB)
        image = cv2.imdecode(data, flag)  # applies EXIF orientation, converts gray/CMYK to RGB
        if image is not None and image.size:
            return image if _DECODES_RGB else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is not None:
            if image.ndim == 3 and image.shape[2] == 4:
                image = _alpha_over_white(image)
            else:
                if image.dtype == np.uint16:
                    image = (image / 257.0).round().astype(np.uint8)
                elif image.dtype != np.uint8:
                    image = None  # float TIFF etc.: let Pillow try
                if image is not None and image.ndim == 2 or image is not None and image.shape[2] == 1:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            if image is not None and fmt != "BMP" and fmt != "PNG":
                image = _apply_exif_orientation_if_any(data, image)
    if image is None:
        return _pil_decode(path, data)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(path, "image has zero width or height")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _apply_exif_orientation_if_any(data: np.ndarray, image: np.ndarray) -> np.ndarray:
    """WEBP/TIFF via IMREAD_UNCHANGED skip EXIF orientation; Pillow reads the tag and we rotate the same way."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return image
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: a.transpose(1, 0, 2)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](image)) if orientation in ops else image


def read_rgb(path, target_size: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3 with EXIF orientation applied.

    target_size: the side the caller will resize to; a JPEG at least 2x larger on its short side is decoded
    at 1/2, 1/4 or 1/8 scale by libjpeg (much faster, never smaller than target_size).
    Raises ImageReadError for missing, empty, truncated, non-image or undecodable files.
    """
    data, fmt = _read_bytes(path)
    return decode_rgb(path, data, fmt, target_size)


def resize_square(image: np.ndarray, image_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Stretched resize to image_size x image_size (into out when given). Bilinear unless shrinking by 2x or
    more on both sides (then INTER_AREA against aliasing): after reduced JPEG decode the remaining factor is
    below 2, and OpenCV's INTER_AREA at non-integer factors costs about as much as the JPEG decode itself."""
    height, width = image.shape[:2]
    if height == image_size and width == image_size:
        if out is not None and out is not image:
            out[...] = image
            return out
        return image
    strong_shrink = min(height, width) >= 2 * image_size
    return cv2.resize(
        image, (image_size, image_size), dst=out, interpolation=cv2.INTER_AREA if strong_shrink else cv2.INTER_LINEAR
    )


def read_resized(path, image_size: int) -> np.ndarray:
    """read_rgb (reduced-size decode where possible) then resize_square: the model's input contract."""
    return resize_square(read_rgb(path, target_size=image_size), image_size)


def check_image(path, full_decode: bool = False) -> str | None:
    """A one-line problem description for an unreadable image, or None when it looks fine.

    The default check reads the bytes, the format signature, the header and the JPEG end marker: cheap
    enough for 15k files. full_decode=True also decodes the pixels (catches corruption in the middle).
    """
    try:
        data, fmt = _read_bytes(path)
        if full_decode:
            decode_rgb(path, data, fmt)
            return None
        if fmt == "JPEG":
            if not _jpeg_complete(data):
                _pil_verify_jpeg(path, data)
            if _jpeg_header_size(data) is None:
                return "corrupt JPEG: no frame header (SOF) found"
        else:
            _pil_header_size(path, data)
    except ImageReadError as error:
        return error.reason
    return None


def _pil_header_size(path, data: np.ndarray) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data[: 1 << 20].tobytes())) as im:
            return im.size
    except Exception as error:
        raise ImageReadError(path, f"cannot read image header ({error})") from None


def image_size(path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), from the header only. Raises ImageReadError."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ImageReadError(path, "file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as error:
        raise ImageReadError(path, f"cannot read image header ({error})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def warn_unreadable(path, reason: str, seen: set) -> None:
    """Warn once per file (per process) that it was replaced by a blank image."""
    key = str(path)
    if key not in seen:
        seen.add(key)
        warnings.warn(f"unreadable image replaced by a blank: {key}: {reason}", RuntimeWarning, stacklevel=3)
