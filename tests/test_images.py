"""Finding and loading images: every Pillow mode and format, EXIF, draft mode, bad files."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from mkt_tag.errors import ImageLoadError
from mkt_tag.images import (
    IMAGE_EXTENSIONS,
    UNREADABLE_EXTENSIONS,
    find_images,
    load_image,
    resize_center_crop,
    scan_inputs,
    to_rgb,
)

WHITE = (255, 255, 255)


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    image.save(path, **options)
    return path


def solid(path: Path, colour: tuple[int, int, int] = (200, 30, 60), size=(32, 24)) -> Path:
    return save(Image.new("RGB", size, colour), path)


def reason_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    return caught.value.reason


# --- find_images -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "b.jpg",
        "a.PNG",
        "c.webp",
        "notes.txt",
        ".hidden.jpg",
        "sub/d.tiff",
        ".cache/e.jpg",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_find_images_scans_a_directory_for_image_extensions_only(tree: Path) -> None:
    images, errors = find_images([tree])
    assert images == [tree / "a.PNG", tree / "b.jpg", tree / "c.webp"]
    assert errors == []


def test_find_images_recursive_descends_but_skips_hidden_directories(tree: Path) -> None:
    images, _ = find_images([tree], recursive=True)
    assert images == [tree / "a.PNG", tree / "b.jpg", tree / "c.webp", tree / "sub" / "d.tiff"]


def test_find_images_keeps_explicit_files_whatever_their_extension(tree: Path) -> None:
    images, errors = find_images([tree / "notes.txt", tree / ".hidden.jpg"])
    assert images == [tree / ".hidden.jpg", tree / "notes.txt"]
    assert errors == []


def test_find_images_sorts_and_removes_duplicates(tree: Path) -> None:
    given = [tree / "b.jpg", tree / "sub" / ".." / "b.jpg", tree, tree / "c.webp"]
    images, _ = find_images(given)
    assert images == [tree / "a.PNG", tree / "b.jpg", tree / "c.webp"]
    assert find_images(list(reversed(given)))[0] == images


def test_find_images_reports_missing_paths_without_raising(tree: Path) -> None:
    images, errors = find_images([tree / "nope.jpg", tree / "b.jpg"])
    assert images == [tree / "b.jpg"]
    assert [(error.path, error.reason) for error in errors] == [
        (tree / "nope.jpg", "file not found")
    ]


def test_find_images_reports_unreadable_directories(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated, because permissions do not stop root (and CI containers run as root).
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == tree / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    images, errors = find_images([tree], recursive=True)
    assert tree / "b.jpg" in images
    assert [(error.path, error.reason) for error in errors] == [(tree / "sub", "permission denied")]


def test_scan_lists_photo_formats_it_cannot_read_apart(tree: Path) -> None:
    for name in ["x.jxl", "sub/y.JXL", ".hidden.jxl", "v.mov"]:
        (tree / name).write_bytes(b"x")
    found = scan_inputs([tree], recursive=True)
    assert found.images == [
        tree / "a.PNG",
        tree / "b.jpg",
        tree / "c.webp",
        tree / "sub" / "d.tiff",
    ]
    assert found.unreadable == [tree / "sub" / "y.JXL", tree / "x.jxl"]
    assert found.errors == [] and found.missing == []
    assert find_images([tree], recursive=True)[0] == found.images


def test_scan_tells_missing_inputs_from_other_errors(tree: Path) -> None:
    found = scan_inputs([tree / "nope", tree / "b.jpg"])
    assert found.missing == [tree / "nope"]
    assert [error.path for error in found.errors] == [tree / "nope"]


def test_the_lists_of_extensions_do_not_overlap() -> None:
    assert not IMAGE_EXTENSIONS & UNREADABLE_EXTENSIONS
    assert ".jxl" in UNREADABLE_EXTENSIONS
    raw = {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"}
    assert raw <= IMAGE_EXTENSIONS or raw <= UNREADABLE_EXTENSIONS  # read with rawpy only
    assert {".heic", ".heif", ".hif"} <= IMAGE_EXTENSIONS
    assert ".avif" in IMAGE_EXTENSIONS | UNREADABLE_EXTENSIONS


@pytest.mark.skipif(".avif" not in IMAGE_EXTENSIONS, reason="this Pillow has no AVIF")
def test_avif_is_found_and_read_where_pillow_reads_it(tmp_path: Path) -> None:
    solid(tmp_path / "a.avif")
    assert find_images([tmp_path])[0] == [tmp_path / "a.avif"]
    assert load_image(tmp_path / "a.avif").size == (32, 24)


def test_a_named_file_of_an_unread_format_says_so(tmp_path: Path) -> None:
    (tmp_path / "x.JXL").write_bytes(b"\xff\x0a" + bytes(64))  # a JPEG XL codestream start
    assert (
        reason_of(tmp_path / "x.JXL") == "mkt-tag cannot read .jxl files yet (convert it to JPEG)"
    )


# --- colour modes ------------------------------------------------------------------------


def palette_image(mode: str, index: int) -> Image.Image:
    image = Image.new(mode, (4, 4), index if mode == "P" else (index, 255))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * 756)
    return image


@pytest.mark.parametrize(
    ("image", "filename", "expected"),
    [
        (Image.new("1", (4, 4), 1), "one.png", WHITE),
        (Image.new("L", (4, 4), 100), "grey.png", (100, 100, 100)),
        (palette_image("P", 3), "palette.png", (10, 20, 30)),
        (Image.new("LA", (4, 4), (100, 255)), "opaque-la.png", (100, 100, 100)),
        (Image.new("LA", (4, 4), (0, 0)), "clear-la.png", WHITE),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "opaque.png", (255, 0, 0)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "clear.png", WHITE),
        (Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "half.png", (127, 127, 127)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "cmyk.tiff", (255, 0, 0)),
        (Image.new("LAB", (4, 4), (127, 128, 128)), "lab.tiff", (118, 118, 118)),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_every_mode_loads_as_rgb(
    tmp_path: Path, image: Image.Image, filename: str, expected: tuple[int, int, int]
) -> None:
    path = save(image, tmp_path / filename)
    loaded = load_image(path)
    assert Image.open(path).mode == image.mode  # the file really holds that mode
    assert loaded.mode == "RGB"
    assert loaded.size == (4, 4)
    assert pixel(loaded) == pytest.approx(expected, abs=1)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = palette_image("P", 3)
    image.putpixel((1, 1), 1)
    path = save(image, tmp_path / "transparent.png", transparency=3)
    loaded = load_image(path)
    assert pixel(loaded, (0, 0)) == WHITE
    assert pixel(loaded, (1, 1)) == (255, 0, 0)


def test_pa_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = palette_image("PA", 1)
    image.putpixel((1, 1), (2, 0))
    path = save(image, tmp_path / "pa.tiff")
    assert Image.open(path).mode == "PA"
    loaded = load_image(path)
    assert pixel(loaded, (0, 0)) == (255, 0, 0)
    assert pixel(loaded, (1, 1)) == WHITE


def sixteen_bit(mode: str, values: list[int]) -> Image.Image:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, (len(values), 1), np.array(values, dtype=dtype).tobytes())


@pytest.mark.parametrize(("mode", "filename"), [("I;16", "16.png"), ("I;16B", "16b.tiff")])
def test_16_bit_uses_the_full_range(tmp_path: Path, mode: str, filename: str) -> None:
    path = save(sixteen_bit(mode, [0, 257 * 100, 65535, 1000]), tmp_path / filename)
    assert Image.open(path).mode in (mode, "I")  # older Pillow (10.1) opens 16-bit PNGs as I
    grey = [pixel(load_image(path), (x, 0))[0] for x in range(4)]
    assert grey == [0, 100, 255, 4]  # not clipped at 255, as Image.convert("L") would


def test_16_bit_little_endian_in_memory() -> None:
    image = sixteen_bit("I;16L", [0, 257 * 100, 65535])
    assert [pixel(to_rgb(image), (x, 0)) for x in range(3)] == [(0,) * 3, (100,) * 3, WHITE]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [1000, 25700, 30000], [4, 100, 117]),  # 16-bit data (older Pillow's PNGs)
        ("I", [0, 100, 200], [0, 100, 200]),  # 8-bit data stays as it is
        ("I", [-1000, 0, 1000], [0, 128, 255]),  # anything else: its own min..max
        ("F", [0.25, 0.5, 0.75], [64, 128, 191]),
        ("F", [10.0, 100.0, 200.0], [10, 100, 200]),
        ("F", [-1.0, 0.0, float("nan")], [0, 255, 0]),  # NaN shows as the darkest value
    ],
)
def test_32_bit_modes_scale_by_their_value_range(
    tmp_path: Path, mode: str, values: list[float], expected: list[int]
) -> None:
    dtype = np.int32 if mode == "I" else np.float32
    image = Image.fromarray(np.array([values], dtype=dtype))
    path = save(image, tmp_path / "deep.tiff")
    assert Image.open(path).mode == mode
    loaded = load_image(path)
    assert [pixel(loaded, (x, 0)) for x in range(3)] == [(value,) * 3 for value in expected]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("HSV", (85, 255, 255), (0, 255, 0)), ("YCbCr", (76, 85, 255), (254, 0, 0))],
)
def test_colour_spaces_without_a_portable_file_format(
    mode: str, value: tuple[int, int, int], expected: tuple[int, int, int]
) -> None:
    # No format saves HSV, and older Pillow (10.1) cannot read back its own YCbCr TIFFs.
    assert pixel(to_rgb(Image.new(mode, (2, 2), value))) == pytest.approx(expected, abs=1)


def test_rgb_is_returned_unchanged() -> None:
    image = Image.new("RGB", (2, 2))
    assert to_rgb(image) is image


# --- formats, frames, orientation, draft -------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "tolerance"),
    [("a.jpg", 4), ("a.png", 0), ("a.webp", 4), ("a.bmp", 0), ("a.tif", 0), ("a.gif", 0)],
)
def test_every_format_loads(tmp_path: Path, filename: str, tolerance: int) -> None:
    loaded = load_image(solid(tmp_path / filename))
    assert (loaded.mode, loaded.size) == ("RGB", (32, 24))
    assert pixel(loaded, (5, 5)) == pytest.approx((200, 30, 60), abs=tolerance)


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(path).n_frames == 2  # type: ignore[attr-defined]
    assert pixel(load_image(path)) == (255, 0, 0)


def oriented_jpeg(path: Path, size: tuple[int, int], orientation: int) -> Path:
    """Blue image with a red block in its stored top-left corner."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(image, path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = oriented_jpeg(tmp_path / "rotated.jpg", (80, 40), orientation=6)
    loaded = load_image(path)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored top-left
    # corner ends up top-right and width and height swap.
    assert loaded.size == (40, 80)
    assert pixel(loaded, (36, 4)) == pytest.approx((255, 0, 0), abs=8)
    assert pixel(loaded, (4, 4)) == pytest.approx((0, 0, 255), abs=8)


def test_jpeg_draft_decodes_at_reduced_scale(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (4000, 3000), (10, 200, 30)), tmp_path / "big.jpg")
    assert load_image(path).size == (4000, 3000)
    reduced = load_image(path, min_side=448)
    assert 448 <= min(reduced.size) < 3000
    assert reduced.size == (1000, 750)  # 1/4; 1/8 would give 375 < 448
    assert pixel(reduced, (500, 300)) == pytest.approx((10, 200, 30), abs=4)
    assert load_image(path, min_side=5000).size == (4000, 3000)


def test_jpeg_draft_keeps_min_side_after_rotation(tmp_path: Path) -> None:
    path = oriented_jpeg(tmp_path / "portrait.jpg", (1600, 1200), orientation=6)
    assert load_image(path, min_side=300).size == (300, 400)


def heic(image: Image.Image, path: Path, **options: Any) -> Path:
    pillow_heif.register_heif_opener()
    return save(image, path, format="HEIF", **options)


@pytest.mark.parametrize("name", ["a.heic", "b.HEIF", "c.hif"])
def test_heic_is_found_and_read(tmp_path: Path, name: str) -> None:
    path = heic(Image.new("RGB", (32, 24), (200, 30, 60)), tmp_path / name, quality=95)
    assert find_images([tmp_path])[0] == [path]
    loaded = load_image(path)
    assert (loaded.mode, loaded.size) == ("RGB", (32, 24))
    assert pixel(loaded, (5, 5)) == pytest.approx((200, 30, 60), abs=6)


@pytest.mark.parametrize(("orientation", "red_corner"), [(3, (76, 36)), (6, (36, 4)), (8, (4, 76))])
def test_heic_orientation_is_applied_once(
    tmp_path: Path, orientation: int, red_corner: tuple[int, int]
) -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = heic(image, tmp_path / "rotated.heic", exif=exif.tobytes(), quality=95)
    # pillow-heif writes the rotation as an irot/imir transform and keeps the EXIF tag:
    # applying both would rotate the picture twice.
    written = Image.Exif()
    written.load(pillow_heif.open_heif(path).info["exif"])
    assert written[0x0112] == orientation
    loaded = load_image(path)
    assert loaded.size == ((80, 40) if orientation == 3 else (40, 80))
    assert pixel(loaded, red_corner) == pytest.approx((255, 0, 0), abs=12)
    assert pixel(loaded, (20, 20)) == pytest.approx((0, 0, 255), abs=12)


def test_heic_with_alpha_becomes_rgb_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    image.paste((200, 30, 60, 255), (0, 0, 8, 16))
    loaded = load_image(heic(image, tmp_path / "alpha.heic", quality=-1))  # -1: lossless
    assert loaded.mode == "RGB"
    assert pixel(loaded, (2, 8)) == pytest.approx((200, 30, 60), abs=6)
    assert pixel(loaded, (13, 8)) == pytest.approx(WHITE, abs=6)


def test_10_bit_heic_becomes_8_bit_rgb(tmp_path: Path) -> None:
    pixels = np.full((24, 32, 3), 1000 << 6, dtype=np.uint16)  # 1000 of 1023
    path = tmp_path / "hdr.heic"
    pillow_heif.from_bytes("RGB;16", (32, 24), pixels.tobytes()).save(path, quality=-1)
    assert pillow_heif.open_heif(path, convert_hdr_to_8bit=False).info["bit_depth"] == 10
    loaded = load_image(path)
    assert (loaded.mode, loaded.size) == ("RGB", (32, 24))
    assert pixel(loaded, (5, 5)) == pytest.approx((249, 249, 249), abs=2)


def test_heic_pixel_limit_applies_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = heic(Image.new("RGB", (100, 100), (0, 0, 0)), tmp_path / "big.heic")

    def decode(self: Any) -> None:
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(pillow_heif.HeifImageFile, "load", decode)
    assert reason_of(path, max_pixels=9_999).startswith("too large: 100 x 100 = 10,000 pixels")


def test_truncated_and_fake_heic(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = heic(Image.fromarray(noise), tmp_path / "cut.heic")
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 20])
    assert reason_of(path) == "truncated or corrupt image data"
    (tmp_path / "fake.heic").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    assert reason_of(tmp_path / "fake.heic") == "truncated or corrupt image data"
    (tmp_path / "notes.heic").write_text("just some words\n")
    assert reason_of(tmp_path / "notes.heic") == "not an image (unrecognised format)"


def test_heif_support_is_not_loaded_on_import() -> None:
    code = "import sys, mkt_tag.images; assert 'pillow_heif' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- bad files --------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason_of(tmp_path / "empty.jpg") == "empty file (0 bytes)"


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    path = save(Image.fromarray(noise), tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert reason_of(path) == "truncated or corrupt image data"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("just some words\n")
    assert reason_of(tmp_path / "notes.jpg") == "not an image (unrecognised format)"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "album.jpg").mkdir()
    assert reason_of(tmp_path / "album.jpg") == "is a directory"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert reason_of(tmp_path / "pipe.jpg") == "not a regular file"


def test_missing_file(tmp_path: Path) -> None:
    assert reason_of(tmp_path / "gone.jpg") == "file not found"


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated, because chmod does not stop root (and CI containers run as root).
    path = solid(tmp_path / "secret.png")
    real_open = Path.open

    def guarded_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded_open)
    assert reason_of(path) == "permission denied"


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares a huge image (no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = solid(tmp_path / "small.png", size=(100, 100))
    reason = reason_of(path, max_pixels=9_999)
    assert reason == (
        "too large: 100 x 100 = 10,000 pixels exceeds the limit of 9,999 (decompression-bomb guard)"
    )
    assert load_image(path, max_pixels=10_000).size == (100, 100)


def test_bomb_check_does_not_rely_on_pillows_global(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    assert reason_of(path) == (
        "too large: 30000 x 30000 = 900,000,000 pixels exceeds the limit of 178,956,970 "
        "(decompression-bomb guard)"
    )


def test_pillows_own_bomb_error_becomes_an_image_load_error(tmp_path: Path) -> None:
    path = png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    reason = reason_of(path, max_pixels=10**12)
    assert reason.startswith("too large: exceeds Pillow's limit of 178,956,970 pixels")


def test_pillows_bomb_warning_does_not_leak(tmp_path: Path) -> None:
    # 100 M pixels: above Pillow's warning threshold (89 M), below its error threshold.
    path = png_header_only(tmp_path / "big.png", 10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reason_of(path, max_pixels=50_000_000).startswith("too large: 10000 x 10000")
        assert reason_of(path) == "truncated or corrupt image data"  # allowed, then decoded


def test_invalid_min_side_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_side"):
        load_image(solid(tmp_path / "a.png"), min_side=0)


# --- resize_center_crop -----------------------------------------------------------------


def coordinates_image(width: int, height: int) -> Image.Image:
    """Red encodes the column (x // 2), green the row: crops can be located exactly."""
    columns, rows = np.meshgrid(np.arange(width) // 2, np.arange(height))
    pixels = np.stack([columns, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def test_center_crop_position_matches_torchvision() -> None:
    # Shortest side already 256, so only the crop acts: left = round(160 / 2) = 80,
    # top = round(32 / 2) = 16.
    array = resize_center_crop(coordinates_image(384, 256), 256, 224, "nearest")
    assert (array.shape, array.dtype) == ((224, 224, 3), np.uint8)
    assert tuple(array[0, 0]) == (40, 16, 0)
    assert tuple(array[-1, -1]) == ((80 + 223) // 2, 16 + 223, 0)
    assert array.flags.writeable


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "lanczos"])
def test_resize_makes_the_shortest_side_equal_resize(interpolation: str) -> None:
    image = Image.new("RGB", (3000, 2000), (50, 100, 150))
    array = resize_center_crop(image, 256, 224, interpolation)
    assert array.shape == (224, 224, 3)
    assert tuple(array[100, 100]) == (50, 100, 150)


def test_portrait_crop_is_centred_vertically() -> None:
    image = Image.new("RGB", (100, 300), (255, 0, 0))
    image.paste((0, 0, 255), (0, 100, 100, 200))  # the middle third is blue
    array = resize_center_crop(image, 100, 100, "nearest")
    assert (array[:, :, 2] == 255).all()


def test_resize_center_crop_rejects_bad_arguments() -> None:
    image = Image.new("RGB", (10, 10))
    with pytest.raises(ValueError, match="interpolation"):
        resize_center_crop(image, 8, 8, "cubic")
    with pytest.raises(ValueError, match="crop"):
        resize_center_crop(image, 8, 9)
