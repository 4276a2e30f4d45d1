"""lib.images: every bad-file kind gives ImageReadError/check_image text; odd-but-valid files decode correctly."""

import io

import numpy as np
import pytest
from PIL import Image

from lib.images import ImageReadError, check_image, image_size, read_resized, read_rgb


def _photo(width=64, height=48):
    """Left half red, right half blue (RGB): lets tests check colour order and orientation."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def _save(tmp_path, name, image, fmt="JPEG", **kwargs):
    path = tmp_path / name
    image.save(path, fmt, **kwargs)
    return path


def _close(a, b, tol=40):
    return np.all(np.abs(np.asarray(a, int) - np.asarray(b, int)) <= tol)


def test_rgb_jpeg_decodes_in_rgb_order(tmp_path):
    image = read_rgb(_save(tmp_path, "a.jpg", _photo(), quality=95))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert _close(image[24, 5], (255, 0, 0)) and _close(image[24, 60], (0, 0, 255))
    assert check_image(tmp_path / "a.jpg") is None
    assert image_size(tmp_path / "a.jpg") == (64, 48)


def test_reduced_decode_never_goes_below_target(tmp_path):
    path = _save(tmp_path, "big.jpg", _photo(640, 480))
    assert read_rgb(path, target_size=224).shape == (240, 320, 3)  # 1/2 scale keeps 240 >= 224
    assert read_rgb(path, target_size=299).shape == (480, 640, 3)  # 1/2 would be 240 < 299
    assert read_rgb(path, target_size=50).shape == (60, 80, 3)  # 1/8
    assert read_resized(path, 299).shape == (299, 299, 3)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left (red) half ends up on top
    path = _save(tmp_path, "phone.jpg", _photo(64, 48), exif=exif, quality=95)
    image = read_rgb(path)
    assert image.shape == (64, 48, 3)
    assert _close(image[5, 24], (255, 0, 0)) and _close(image[60, 24], (0, 0, 255))
    assert image_size(path) == (48, 64)


def test_grayscale_jpeg_gives_three_channels(tmp_path):
    path = _save(tmp_path, "gray.jpg", _photo().convert("L"))
    image = read_rgb(path)
    assert image.shape == (48, 64, 3)
    assert np.array_equal(image[..., 0], image[..., 1])


def test_cmyk_jpeg_colours_are_right(tmp_path):
    path = _save(tmp_path, "cmyk.jpg", _photo().convert("CMYK"), quality=95)
    image = read_rgb(path)
    assert image.shape == (48, 64, 3)
    assert _close(image[24, 5], (255, 0, 0), 60) and _close(image[24, 60], (0, 0, 255), 60)


def test_png_with_jpg_name(tmp_path):
    path = _save(tmp_path, "actually_png.jpg", _photo(), fmt="PNG")
    image = read_rgb(path)
    assert image.shape == (48, 64, 3) and tuple(image[24, 5]) == (255, 0, 0)
    assert check_image(path) is None


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = _photo().convert("RGBA")
    pixels = np.asarray(rgba).copy()
    pixels[:10, :, 3] = 0  # fully transparent top rows
    path = _save(tmp_path, "alpha.png", Image.fromarray(pixels), fmt="PNG")
    image = read_rgb(path)
    assert image.shape == (48, 64, 3)
    assert tuple(image[0, 5]) == (255, 255, 255) and tuple(image[30, 5]) == (255, 0, 0)


def test_palette_png(tmp_path):
    path = _save(tmp_path, "palette.png", _photo().convert("P"), fmt="PNG")
    image = read_rgb(path)
    assert image.shape == (48, 64, 3) and _close(image[24, 5], (255, 0, 0))


def test_16bit_png(tmp_path):
    import cv2

    pixels = np.zeros((48, 64, 3), np.uint16)
    pixels[:, :32, 2] = 65535  # BGR order for cv2: red on the left
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), pixels)
    image = read_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    assert tuple(image[24, 5]) == (255, 0, 0) and tuple(image[24, 60]) == (0, 0, 0)


def test_gif_falls_back_to_pillow(tmp_path):
    path = _save(tmp_path, "anim.gif", _photo(), fmt="GIF")
    assert read_rgb(path).shape == (48, 64, 3)


def _assert_unreadable(path, fragment):
    with pytest.raises(ImageReadError) as info:
        read_rgb(path)
    assert info.value.path == str(path) and fragment in info.value.reason
    problem = check_image(path)
    assert problem is not None and fragment in problem
    return info.value


def test_missing_file(tmp_path):
    _assert_unreadable(tmp_path / "nope.jpg", "not found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_unreadable(path, "empty file")


def test_truncated_jpeg_is_detected(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)).save(buffer, "JPEG")
    raw = buffer.getvalue()
    for cut in (0.5, 0.9):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(raw[: int(len(raw) * cut)])
        _assert_unreadable(path, "truncated")


def test_jpeg_with_padding_after_end_marker_is_fine(tmp_path):
    path = _save(tmp_path, "padded.jpg", _photo())
    path.write_bytes(path.read_bytes() + b"\x00" * 100)
    assert read_rgb(path).shape == (48, 64, 3) and check_image(path) is None


def test_html_and_text_saved_as_jpg(tmp_path):
    html = tmp_path / "page.jpg"
    html.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    _assert_unreadable(html, "HTML")
    text = tmp_path / "note.jpg"
    text.write_text("this is not a picture\n")
    _assert_unreadable(text, "text file")


def test_heic_is_named(tmp_path):
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    _assert_unreadable(path, "HEIC")


def test_corrupt_jpeg_body(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    _assert_unreadable(path, "JPEG")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    _assert_unreadable(tmp_path / "dir.jpg", "directory")


def test_jpeg_with_trailer_after_end_marker_is_fine(tmp_path):
    # Some phones append their own data after the JPEG's end marker.
    path = _save(tmp_path, "trailer.jpg", _photo())
    path.write_bytes(path.read_bytes() + b"SEFH" + bytes(range(256)) * 8)
    assert read_rgb(path).shape == (48, 64, 3) and check_image(path) is None


def test_webp_saved_as_jpg(tmp_path):
    path = _save(tmp_path, "web.jpg", _photo(), fmt="WEBP", lossless=True)
    image = read_rgb(path)
    assert image.shape == (48, 64, 3) and tuple(image[24, 5]) == (255, 0, 0)


def test_progressive_jpeg_and_its_truncation(tmp_path):
    path = _save(tmp_path, "progressive.jpg", _photo(160, 120), progressive=True, quality=90)
    assert read_rgb(path).shape == (120, 160, 3)
    cut = tmp_path / "progressive_cut.jpg"
    cut.write_bytes(path.read_bytes()[:-200])
    _assert_unreadable(cut, "truncated")
