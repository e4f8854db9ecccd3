"""AVIF and camera raw files: orientation applied once, preview or developed, damaged files.

The raw files are DNGs written here byte by byte (a TIFF with DNG tags over a Bayer mosaic),
so that no camera's file has to be shipped.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from mkt_tag import camera_raw
from mkt_tag.errors import ImageLoadError
from mkt_tag.images import (
    IMAGE_EXTENSIONS,
    UNREADABLE_EXTENSIONS,
    Decoded,
    ImageFiles,
    load_image,
    scan_inputs,
)

try:
    import rawpy
except ImportError:  # the raw extra is not installed: only the tests of its absence run
    rawpy = None  # type: ignore[assignment]

needs_rawpy = pytest.mark.skipif(rawpy is None, reason="needs rawpy: pip install 'mkt-tag[raw]'")

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)
ORIENTATION = 0x0112
# Where the marker stored in the top-left corner of a 64 x 48 picture is seen, shown upright.
SEEN_AT = {1: "top-left", 3: "bottom-right", 6: "top-right", 8: "bottom-left"}


def corner(image: Image.Image, where: str, inset: int = 3) -> tuple[int, ...]:
    width, height = image.size
    x = inset if where.endswith("left") else width - 1 - inset
    y = inset if where.startswith("top") else height - 1 - inset
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def is_red(pixel: tuple[int, ...]) -> bool:
    return pixel[0] > 180 and max(pixel[1:3]) < 130


def red_corners(image: Image.Image) -> list[str]:
    return [where for where in SEEN_AT.values() if is_red(corner(image, where))]


def is_grey(pixel: tuple[int, ...]) -> bool:
    return max(pixel[:3]) - min(pixel[:3]) < 25


def is_green(pixel: tuple[int, ...]) -> bool:
    return pixel[1] > 120 and max(pixel[0], pixel[2]) < 60


# --- AVIF ----------------------------------------------------------------------------------

needs_avif = pytest.mark.skipif(".avif" not in IMAGE_EXTENSIONS, reason="this Pillow has no AVIF")


def marked(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """Blue, with a red block in its stored top-left corner."""
    image = Image.new(mode, size, BLUE)
    image.paste(RED, (0, 0, 16, 16))
    return image


@needs_avif
def test_avif_is_found_and_read_in_colour(tmp_path: Path) -> None:
    marked().save(tmp_path / "a.avif", quality=95)
    found = scan_inputs([tmp_path])
    assert (found.images, found.unreadable) == ([tmp_path / "a.avif"], [])
    loaded = load_image(tmp_path / "a.avif")
    assert (loaded.mode, loaded.size) == ("RGB", (64, 48))
    assert corner(loaded, "top-left") == pytest.approx(RED, abs=16)
    assert corner(loaded, "bottom-right") == pytest.approx(BLUE, abs=16)


@needs_avif
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_avif_orientation_is_applied_once(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "turned.avif"
    marked().save(path, exif=exif.tobytes(), quality=95)
    # Pillow writes the orientation as the file's irot/imir transform and, reading it back,
    # leaves the pixels as stored and reports that transform as the EXIF orientation.
    with Image.open(path) as stored:
        assert stored.size == (64, 48)
        assert stored.getexif()[ORIENTATION] == orientation
    loaded = load_image(path)
    assert loaded.size == ((64, 48) if orientation == 3 else (48, 64))
    assert red_corners(loaded) == [SEEN_AT[orientation]]


@needs_avif
def test_avif_with_alpha_becomes_rgb_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    image.paste((200, 30, 60, 255), (0, 0, 8, 16))
    image.save(tmp_path / "alpha.avif", lossless=True)
    with Image.open(tmp_path / "alpha.avif") as stored:
        assert stored.mode == "RGBA"
    loaded = load_image(tmp_path / "alpha.avif")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 8)) == pytest.approx((200, 30, 60), abs=6)
    assert loaded.getpixel((13, 8)) == pytest.approx((255, 255, 255), abs=6)


@needs_avif
def test_damaged_avif_is_one_clear_line(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = tmp_path / "good.avif"
    Image.fromarray(noise).save(good)
    data = good.read_bytes()
    pixels_at = data.index(b"mdat") + 4
    # Zeroed pixel data: Pillow's decoder raises a RuntimeError, not an OSError.
    (tmp_path / "zeroed.avif").write_bytes(data[:pixels_at] + bytes(len(data) - pixels_at))
    (tmp_path / "cut.avif").write_bytes(data[: len(data) - 200])
    for name in ["zeroed.avif", "cut.avif"]:
        with pytest.raises(ImageLoadError) as caught:
            load_image(tmp_path / name)
        assert str(caught.value) == f"{tmp_path / name}: truncated or corrupt image data"


# --- a DNG writer ----------------------------------------------------------------------------

BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_CODES = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", RATIONAL: "I", SRATIONAL: "i"}
# XYZ (D65) to linear sRGB: a camera that sees in linear sRGB, so colours come out as stored.
XYZ_TO_SRGB = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
Entries = dict[int, tuple[int, Any]]


def ifd(entries: Entries, start: int, next_ifd: int = 0) -> bytes:
    """One TIFF directory written at ``start``, its longer values right after it."""
    tags = sorted(entries)
    extra_at = start + 2 + 12 * len(tags) + 4
    head, extra = struct.pack("<H", len(tags)), b""
    for tag in tags:
        kind, values = entries[tag]
        values = list(values.encode() + b"\0") if kind == ASCII else values
        count = len(values)
        if kind in (RATIONAL, SRATIONAL):
            values = [n for value in values for n in (round(value * 10_000), 10_000)]
        data = struct.pack(f"<{len(values)}{_CODES[kind]}", *values)
        if len(data) > 4:  # stored after the directory, which holds its offset
            offset = extra_at + len(extra)
            extra += data + b"\0" * (len(data) % 2)
            data = struct.pack("<I", offset)
        head += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0")
    return head + struct.pack("<I", next_ifd) + extra


def bayer(rgb: np.ndarray) -> bytes:
    """The RGGB mosaic a sensor would record of a linear 16-bit RGB picture."""
    mosaic = np.empty(rgb.shape[:2], "<u2")
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic.tobytes()


def scene(width: int = 64, height: int = 48) -> np.ndarray:
    """Linear 16-bit grey with a red block in its stored top-left corner."""
    rgb = np.full((height, width, 3), 6000, np.uint16)
    rgb[:16, :16] = (40000, 3000, 3000)
    return rgb


def write_dng(
    path: Path,
    rgb: np.ndarray,
    orientation: int = 1,
    preview: bytes | np.ndarray | None = None,
) -> Path:
    """A DNG 1.4 of ``rgb`` as a Bayer mosaic: with a ``preview`` (JPEG bytes, or 8-bit RGB
    pixels stored uncompressed) in IFD0 and the raw in its SubIFD, as converters write them;
    without, the raw in IFD0. Pixel data comes last, so cutting the file cuts the pixels."""
    height, width, _ = rgb.shape
    mosaic = bayer(rgb)
    tail = preview if isinstance(preview, bytes) else b"" if preview is None else preview.tobytes()
    tail_height, tail_width = (0, 0) if isinstance(preview, bytes | None) else preview.shape[:2]
    camera: Entries = {
        271: (ASCII, "mkt-tag"),
        272: (ASCII, "test camera"),
        274: (SHORT, [orientation]),
        50706: (BYTE, [1, 4, 0, 0]),  # DNGVersion
        50708: (ASCII, "mkt-tag test camera"),  # UniqueCameraModel
        50721: (SRATIONAL, XYZ_TO_SRGB),  # ColorMatrix1
        50778: (SHORT, [21]),  # CalibrationIlluminant1: D65
        50728: (RATIONAL, [1, 1, 1]),  # AsShotNeutral
    }

    def strip(size: tuple[int, int], samples: list[int], offset: int, length: int) -> Entries:
        width, height = size
        return {
            256: (LONG, [width]),
            257: (LONG, [height]),
            258: (SHORT, samples),
            273: (LONG, [offset]),
            277: (SHORT, [len(samples)]),
            278: (LONG, [height]),
            279: (LONG, [length]),
        }

    def layout(pixels_at: int) -> bytes:
        raw = {
            **strip((width, height), [16], pixels_at, len(mosaic)),
            254: (LONG, [0]),  # NewSubfileType: the main image
            259: (SHORT, [1]),
            262: (SHORT, [32803]),  # colour filter array
            33421: (SHORT, [2, 2]),
            33422: (BYTE, [0, 1, 1, 2]),  # RGGB
            50717: (LONG, [65535]),  # WhiteLevel
        }
        if preview is None:
            return ifd({**raw, **camera}, 8)
        is_jpeg = isinstance(preview, bytes)
        size = Image.open(io.BytesIO(tail)).size if is_jpeg else (tail_width, tail_height)
        first = {
            **strip(size, [8, 8, 8], pixels_at + len(mosaic), len(tail)),
            254: (LONG, [1]),  # NewSubfileType: a reduced-resolution copy
            259: (SHORT, [7 if is_jpeg else 1]),  # JPEG, or uncompressed
            262: (SHORT, [6 if is_jpeg else 2]),  # YCbCr, or RGB
            **camera,
        }
        sub_at = 8 + len(ifd({**first, 330: (LONG, [0])}, 8))
        return ifd({**first, 330: (LONG, [sub_at])}, 8) + ifd(raw, sub_at)

    meta = layout(0)
    path.write_bytes(b"II*\0\x08\0\0\0" + layout(8 + len(meta)) + mosaic + tail)
    return path


def jpeg(
    size: tuple[int, int] = (64, 48), orientation: int | None = None, marker: str = "top-left"
) -> bytes:
    """A camera's preview: green, with a red block where the scene has it (``marker``).

    With ``orientation`` (0: none) it opens with an EXIF block of its own, as cameras write
    them; without, it has none (Pillow's JFIF header only).
    """
    image = Image.new("RGB", size, GREEN)
    width, height = size
    left = 0 if marker.endswith("left") else width - width // 4
    image.paste(RED, (left, 0, left + width // 4, height // 3))
    out = io.BytesIO()
    if orientation is None:
        image.save(out, "JPEG", quality=95)
        return out.getvalue()
    exif = Image.Exif()
    exif[0x010F] = "mkt-tag"  # Make
    if orientation:
        exif[ORIENTATION] = orientation
    image.save(out, "JPEG", quality=95, exif=exif.tobytes())
    data = out.getvalue()
    assert data[2:4] == b"\xff\xe0"  # Pillow's JFIF segment first: cut, so EXIF comes first
    return data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]


# --- camera raw: developed -------------------------------------------------------------------


@needs_rawpy
def test_a_written_dng_is_what_libraw_expects(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), orientation=6)
    with rawpy.imread(str(path)) as raw:
        assert (raw.sizes.width, raw.sizes.height, raw.sizes.flip) == (64, 48, 6)
        assert np.asarray(raw.raw_pattern).tolist() == [[0, 1], [3, 2]]  # R G / G B
        with pytest.raises(rawpy.LibRawNoThumbnailError):
            raw.extract_thumb()


@needs_rawpy
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_dng_is_developed_upright(tmp_path: Path, orientation: int) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), orientation)
    loaded = load_image(path)
    assert (loaded.mode, loaded.size) == ("RGB", (64, 48) if orientation in (1, 3) else (48, 64))
    assert red_corners(loaded) == [SEEN_AT[orientation]]
    others = [where for where in SEEN_AT.values() if where != SEEN_AT[orientation]]
    assert all(is_grey(corner(loaded, where)) for where in others)


@needs_rawpy
def test_dng_develops_at_half_size_when_that_is_large_enough(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), orientation=6)
    assert load_image(path, min_side=24).size == (24, 32)  # half of 48 x 64
    assert load_image(path, min_side=25).size == (48, 64)
    assert load_image(path).size == (48, 64)
    assert is_red(corner(load_image(path, min_side=8), "top-right", inset=1))


@needs_rawpy
def test_every_orientation_matches_pillows_reading_of_exif(tmp_path: Path) -> None:
    for orientation in range(1, 9):  # mirrored ones too
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        expected = Image.new("RGB", (64, 48))
        expected.info["exif"] = exif.tobytes()
        expected.paste(RED, (0, 0, 16, 16))
        expected = ImageOps.exif_transpose(expected)
        loaded = load_image(write_dng(tmp_path / f"{orientation}.dng", scene(), orientation))
        assert loaded.size == expected.size, orientation
        assert red_corners(loaded) == red_corners(expected), orientation


# --- camera raw: the embedded preview -----------------------------------------------------


@needs_rawpy
def test_a_large_enough_preview_is_used_instead_of_developing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), preview=jpeg((32, 24)))
    with rawpy.imread(str(path)) as raw:
        assert raw.extract_thumb().format == rawpy.ThumbFormat.JPEG
    # green: the camera's preview; grey: the sensor data developed
    assert is_green(corner(load_image(path, min_side=24), "bottom-right"))
    assert is_grey(corner(load_image(path, min_side=25), "bottom-right"))  # preview too small
    assert is_grey(corner(load_image(path), "bottom-right"))  # no size asked: full size only

    def develop(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("developed although the preview would do")

    monkeypatch.setattr(camera_raw.RawFile, "_develop", develop)
    assert load_image(path, min_side=12).size == (16, 12)  # a JPEG preview decodes in draft


@needs_rawpy
def test_a_full_size_preview_serves_without_min_side(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), preview=jpeg((64, 48)))
    loaded = load_image(path)
    assert loaded.size == (64, 48)
    assert is_green(corner(loaded, "bottom-right"))


@needs_rawpy
@pytest.mark.parametrize(
    ("preview", "exif_says"),
    [
        pytest.param(lambda: jpeg(), 6, id="jpeg-libraw-adds-exif"),
        pytest.param(lambda: jpeg(orientation=6), 6, id="jpeg-own-exif"),
        pytest.param(lambda: jpeg(orientation=0), None, id="jpeg-own-exif-without-orientation"),
        pytest.param(lambda: jpeg(orientation=3), 3, id="jpeg-own-exif-disagreeing"),
        pytest.param(lambda: np.asarray(Image.open(io.BytesIO(jpeg()))), None, id="bitmap"),
        pytest.param(lambda: jpeg((48, 64), marker="top-right"), 6, id="jpeg-stored-upright"),
    ],
)
def test_the_preview_is_turned_upright_once(
    tmp_path: Path, preview: Any, exif_says: int | None
) -> None:
    # The raw says 6 (turn clockwise), and so does the EXIF that LibRaw puts in a JPEG
    # preview without EXIF of its own: applying both would turn the picture twice. The
    # raw's orientation is the one applied, as to the developed picture.
    path = write_dng(tmp_path / "a.dng", scene(), orientation=6, preview=preview())
    with rawpy.imread(str(path)) as raw:
        thumb = raw.extract_thumb()
    if isinstance(thumb.data, bytes):  # JPEG, not a bitmap
        assert Image.open(io.BytesIO(thumb.data)).getexif().get(ORIENTATION) == exif_says
    loaded = load_image(path, min_side=40)
    assert loaded.size == (48, 64)
    assert red_corners(loaded) == ["top-right"]
    assert all(is_green(corner(loaded, where)) for where in ["top-left", "bottom-left"])


@needs_rawpy
def test_a_preview_of_another_shape_is_not_used(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), preview=jpeg((64, 36)))  # letterboxed 16:9
    assert is_grey(corner(load_image(path, min_side=8), "bottom-right"))


@needs_rawpy
def test_a_damaged_preview_falls_back_to_developing(tmp_path: Path) -> None:
    data = jpeg()
    broken = data[: data.index(b"\xff\xda") + 40]  # its header, then hardly any pixels
    path = write_dng(tmp_path / "a.dng", scene(), preview=broken)
    loaded = load_image(path, min_side=8)
    assert is_grey(corner(loaded, "bottom-right"))


# --- camera raw: bad files, limits, workers ------------------------------------------------


def reason_of(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, **kwargs)
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    assert "\n" not in str(caught.value)
    return caught.value.reason


@needs_rawpy
def test_damaged_raw_files_are_one_clear_line(tmp_path: Path) -> None:
    data = write_dng(tmp_path / "good.dng", scene()).read_bytes()
    (tmp_path / "cut.dng").write_bytes(data[: len(data) - 3000])
    assert reason_of(tmp_path / "cut.dng") == "truncated or corrupt image data"
    (tmp_path / "header.nef").write_bytes(data[:400])
    (tmp_path / "notes.dng").write_text("just some words\n")
    for name in ["header.nef", "notes.dng"]:
        assert reason_of(tmp_path / name) == "truncated or corrupt image data"
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "noise.cr2").write_bytes(noise)
    assert reason_of(tmp_path / "noise.cr2") == (
        "not a camera raw file LibRaw reads (damaged, or from a camera it lacks)"
    )
    (tmp_path / "empty.arw").write_bytes(b"")
    assert reason_of(tmp_path / "empty.arw") == "empty file (0 bytes)"
    assert reason_of(tmp_path / "gone.dng") == "file not found"


@needs_rawpy
def test_raw_pixel_limit_applies_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dng(tmp_path / "a.dng", scene(), orientation=6, preview=jpeg())

    def decode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(camera_raw.RawFile, "image", decode)
    assert reason_of(path, max_pixels=3071) == (
        "too large: 48 x 64 = 3,072 pixels exceeds the limit of 3,071 (decompression-bomb guard)"
    )


@needs_rawpy
def test_a_name_that_is_not_utf_8_is_read_from_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"caf\xe9.dng")  # Latin-1: rawpy cannot pass it to LibRaw
    try:
        write_dng(path, scene())
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    assert load_image(path).size == (64, 48)


@needs_rawpy
def test_raw_files_decode_in_worker_processes(tmp_path: Path) -> None:
    import torch

    from mkt_tag.config import PreprocessConfig

    paths = [write_dng(tmp_path / f"{i}.dng", scene(), orientation=6) for i in range(4)]
    load_image(paths[0])  # developed here first: LibRaw's threads exist before the fork
    files: Any = ImageFiles(paths, PreprocessConfig(resize=16, image_size=16))
    loader: torch.utils.data.DataLoader[Decoded] = torch.utils.data.DataLoader(
        files, batch_size=2, num_workers=2, collate_fn=list, timeout=20
    )
    with warnings.catch_warnings():
        # rawpy warns in forked workers (pytest would swallow it there): make it fail the test
        warnings.filterwarnings("error", "rawpy is being used", RuntimeWarning)
        decoded = [item for batch in loader for item in batch]
    assert [(index, reason) for index, _, reason in decoded] == [(i, None) for i in range(4)]


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_rawpy
def test_workers_forked_after_developing_do_not_hang(tmp_path: Path) -> None:
    # Without torch loaded first, LibRaw runs on its own OpenMP runtime: a fork after a
    # multi-threaded development used to leave the child waiting forever on absent threads.
    path = write_dng(tmp_path / "a.dng", scene(), orientation=6)
    code = f"""
import multiprocessing, sys
from pathlib import Path
from mkt_tag.images import load_image
assert "rawpy" not in sys.modules and "torch" not in sys.modules
path = Path({str(path)!r})
assert load_image(path).size == (48, 64)
with multiprocessing.get_context("fork").Pool(2) as pool:
    print(pool.map_async(load_image, [path] * 4).get(timeout=20)[0].size)
"""
    assert run_python(code).strip() == "(48, 64)"


# --- folder scans, and rawpy missing ---------------------------------------------------------


@needs_rawpy
def test_a_scan_finds_raw_files(tmp_path: Path) -> None:
    write_dng(tmp_path / "b.DNG", scene())
    (tmp_path / "c.cr2").write_bytes(b"x")
    (tmp_path / "d.jxl").write_bytes(b"x")
    found = scan_inputs([tmp_path])
    assert found.images == [tmp_path / "b.DNG", tmp_path / "c.cr2"]
    assert found.unreadable == [tmp_path / "d.jxl"]
    assert camera_raw.install_hint(found.unreadable) is None
    assert camera_raw.CAMERA_RAW_EXTENSIONS <= IMAGE_EXTENSIONS
    assert ".jxl" in UNREADABLE_EXTENSIONS <= {".jxl", ".avif"}


def test_without_rawpy_a_named_raw_file_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dng(tmp_path / "a.NEF", scene())
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now fails
    assert not camera_raw.rawpy_installed()
    assert reason_of(path) == "reading .nef files needs rawpy: pip install 'mkt-tag[raw]'"


def test_without_rawpy_a_scan_lists_raw_files_as_unreadable_with_a_hint(tmp_path: Path) -> None:
    for name in ["a.jpg", "b.cr2", "c.DNG", "d.jxl"]:
        (tmp_path / name).write_bytes(b"x")
    code = f"""
import sys
sys.modules["rawpy"] = None
from pathlib import Path
from mkt_tag.camera_raw import install_hint
from mkt_tag.images import scan_inputs
found = scan_inputs([Path({str(tmp_path)!r})])
print([path.name for path in found.images], [path.name for path in found.unreadable])
print(install_hint(found.unreadable))
"""
    images, hint = run_python(code).splitlines()
    assert images == "['a.jpg'] ['b.cr2', 'c.DNG', 'd.jxl']"
    assert hint == "to read camera raw files: pip install 'mkt-tag[raw]'"
    assert camera_raw.install_hint([tmp_path / "d.jxl"]) is None
