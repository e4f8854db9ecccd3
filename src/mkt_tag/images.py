"""Finding image files and loading them as RGB, ready for CLIP-style preprocessing.

Every failure a user can cause (missing file, not an image, truncated data, a
decompression bomb) becomes an :class:`~mkt_tag.errors.ImageLoadError` with a short
reason, so one bad file never stops a run of thousands.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from mkt_tag import config
from mkt_tag.camera_raw import CAMERA_RAW_EXTENSIONS, RawFile, rawpy_installed
from mkt_tag.config import PreprocessConfig
from mkt_tag.errors import ImageLoadError

# AVIF is read where Pillow was built with libavif (its wheels are, from Pillow 11.2 on).
_HAS_AVIF = "avif" in features.modules and features.check_module("avif")
_AVIF = frozenset({".avif"}) if _HAS_AVIF else frozenset()

# HEIF/HEIC (phone photos) is read through pillow-heif, registered on first load.
_HEIF = frozenset({".heic", ".heif", ".hif"})

# What a folder scan takes for an image: the formats mkt-tag reads. Camera raw files are
# read through rawpy (camera_raw.py), an optional extra, where it is installed.
_COMMON = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
_RAW = CAMERA_RAW_EXTENSIONS if rawpy_installed() else frozenset()
IMAGE_EXTENSIONS = _COMMON | _HEIF | _AVIF | _RAW

# Photo formats mkt-tag cannot read (yet): a folder scan skips them, but counts and names
# them, so that no photo is left out without a word. JPEG XL (Pillow has no plugin for it),
# AVIF where Pillow lacks it, and camera raw files where rawpy is missing.
UNREADABLE_EXTENSIONS = frozenset({".avif", ".jxl", *CAMERA_RAW_EXTENSIONS}) - IMAGE_EXTENSIONS

# Pillow's own error threshold (2 x Image.MAX_IMAGE_PIXELS with its defaults).
DEFAULT_MAX_PIXELS = 178_956_970

# The filters a checkpoint may name (config.INTERPOLATIONS), as Pillow's constants.
INTERPOLATIONS = {name: Image.Resampling[name.upper()] for name in config.INTERPOLATIONS}

# Greyscale modes with more than 8 bits per pixel; Pillow's convert() clips them at 255.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

# Errors Pillow raises while parsing or decoding damaged data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

# One decoded file: its position, the preprocessed pixels (None when it failed) and why not.
Decoded = tuple[int, np.ndarray | None, str | None]


@dataclass
class FoundImages:
    """What ``scan_inputs`` found in the files and folders it was given."""

    images: list[Path] = field(default_factory=list)  # sorted, each file once
    errors: list[ImageLoadError] = field(default_factory=list)  # missing, unreadable folders
    missing: list[Path] = field(default_factory=list)  # given paths that cannot be opened
    unreadable: list[Path] = field(default_factory=list)  # UNREADABLE_EXTENSIONS, skipped


def scan_inputs(paths: Sequence[Path], recursive: bool = False) -> FoundImages:
    """Expand files and directories into a sorted, de-duplicated list of image files.

    Files named explicitly are always kept, whatever their extension (loading tells the
    user why a non-image fails). Directories contribute their files with an image
    extension, descending into subdirectories when ``recursive``; hidden (dot) files and
    directories are skipped, and files of a photo format mkt-tag cannot read yet
    (``UNREADABLE_EXTENSIONS``) are listed apart. Missing paths and unreadable
    directories are returned as errors instead of being raised, so the caller can report
    them with the other failures.
    """
    found = FoundImages()
    images: list[Path] = []
    unreadable: list[Path] = []
    for given in paths:
        path = Path(given)
        try:
            is_directory = stat.S_ISDIR(path.stat().st_mode)
        except OSError as error:
            found.errors.append(ImageLoadError(path, _os_reason(error)))
            found.missing.append(path)
            continue
        if is_directory:
            for file in _scan_directory(path, recursive, found.errors):
                readable = file.suffix.lower() in IMAGE_EXTENSIONS
                (images if readable else unreadable).append(file)
        else:
            images.append(path)
    found.images = _unique_sorted(images)
    found.unreadable = _unique_sorted(unreadable)
    return found


def find_images(
    paths: Sequence[Path], recursive: bool = False
) -> tuple[list[Path], list[ImageLoadError]]:
    """The images and the errors of ``scan_inputs``."""
    found = scan_inputs(paths, recursive)
    return found.images, found.errors


def _scan_directory(
    directory: Path, recursive: bool, errors: list[ImageLoadError]
) -> Iterator[Path]:
    """The files of ``directory`` with an extension in IMAGE_EXTENSIONS or
    UNREADABLE_EXTENSIONS."""

    def report(error: OSError) -> None:
        errors.append(ImageLoadError(error.filename or directory, _os_reason(error)))

    for root, dirnames, filenames in os.walk(directory, onerror=report):
        # Pruning dirnames in place is how os.walk is told where (not) to descend.
        dirnames[:] = [name for name in dirnames if recursive and not name.startswith(".")]
        for name in filenames:
            suffix = Path(name).suffix.lower()
            if not name.startswith(".") and (
                suffix in IMAGE_EXTENSIONS or suffix in UNREADABLE_EXTENSIONS
            ):
                yield Path(root) / name


def _unique_sorted(paths: list[Path]) -> list[Path]:
    # The same file reached twice (a/../a/x.jpg, a symlink) is tagged once: the first
    # spelling in sorted order is kept, so the result does not depend on argument order.
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in sorted(paths):
        try:
            key = path.resolve()
        except (OSError, RuntimeError):  # symlink loop: fall back to the spelling
            key = path.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def load_image(
    path: Path, min_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Load an image file as RGB, with its EXIF orientation applied.

    ``min_side`` lets JPEGs decode at 1/2, 1/4 or 1/8 scale (several times faster for
    camera photos) while keeping the shortest side at least ``min_side`` pixels. Images
    with more than ``max_pixels`` pixels are refused from their header, before any
    decoding. Multi-frame files (GIF, TIFF, WebP) give their first frame. Transparent
    areas are composited onto white. Pillow's own bomb limit (2 x
    ``Image.MAX_IMAGE_PIXELS``) still applies on top of ``max_pixels``. Camera raw files
    give their embedded preview if large enough, else their developed sensor data.

    Raises:
        ImageLoadError: the file is missing, unreadable, empty, not an image, corrupt or
            too large.
    """
    path = Path(path)
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    _register_heif_opener()
    file = _open_regular_file(path)
    kind = path.suffix.lower()
    try:
        with file, warnings.catch_warnings():
            # We enforce max_pixels ourselves; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if kind in CAMERA_RAW_EXTENSIONS:
                with RawFile(path) as raw:  # reads the header only
                    _check_pixel_count(path, raw.size, max_pixels)
                    oriented = raw.image(min_side)
            else:
                with Image.open(file) as image:  # reads the header only
                    kind = image.format or kind
                    _check_pixel_count(path, image.size, max_pixels)
                    if min_side is not None:
                        _decode_at_reduced_scale(image, min_side)
                    image.load()
                    oriented = _apply_exif_orientation(image)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        if path.suffix.lower() in UNREADABLE_EXTENSIONS:
            reason = f"mkt-tag cannot read {path.suffix.lower()} files yet (convert it to JPEG)"
            raise ImageLoadError(path, reason) from None
        if _is_heif(path):  # pillow-heif reports damaged HEIF data as an unknown format
            raise ImageLoadError(path, "truncated or corrupt image data") from None
        raise ImageLoadError(path, "not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        reason = f"too large: exceeds Pillow's limit of {limit:,} pixels (decompression-bomb guard)"
        raise ImageLoadError(path, reason) from None
    except _DECODE_ERRORS:
        raise ImageLoadError(path, "truncated or corrupt image data") from None
    except RuntimeError:  # how Pillow's AVIF decoder reports damaged pixel data
        if kind not in ("AVIF", ".avif"):
            raise
        raise ImageLoadError(path, "truncated or corrupt image data") from None
    try:
        return to_rgb(oriented)
    except ValueError:  # a colour mode Pillow can open but not convert
        raise ImageLoadError(path, f"unsupported colour mode {oriented.mode}") from None


@functools.cache
def _register_heif_opener() -> None:
    # Here rather than at import: `import mkt_tag` stays fast, and each DataLoader worker
    # (which calls load_image) registers it in its own process. pillow-heif applies the
    # file's rotation and mirroring (irot/imir) while decoding and resets the EXIF
    # orientation it leaves behind to 1, so exif_transpose does not rotate a second time;
    # 10- and 12-bit images decode to 8 bits.
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _is_heif(path: Path) -> bool:
    from pillow_heif import is_supported

    try:
        return bool(is_supported(path))  # reads the ftyp brand at the start of the file
    except (OSError, ValueError):
        return False


def _open_regular_file(path: Path) -> BinaryIO:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(path, "is a directory")
        if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block forever
            raise ImageLoadError(path, "not a regular file")
        if info.st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        return path.open("rb")
    except OSError as error:
        raise ImageLoadError(path, _os_reason(error)) from None


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    pixels = width * height
    if pixels > max_pixels:
        reason = (
            f"too large: {width} x {height} = {pixels:,} pixels exceeds the limit of "
            f"{max_pixels:,} (decompression-bomb guard)"
        )
        raise ImageLoadError(path, reason)


def _decode_at_reduced_scale(image: Image.Image, min_side: int) -> None:
    # Pillow's JPEG draft picks the largest reduction 1/s (s in 8, 4, 2, 1) with
    # s <= min(width // w, height // h); asking for a min_side square therefore keeps
    # both sides >= min_side. EXIF rotation swaps the sides, so the shortest side (the
    # one preprocessing resizes) is the same before and after it. pillow-heif decodes an
    # embedded thumbnail instead when one has both sides >= min_side and the image's
    # orientation; other formats ignore draft().
    image.draft("RGB", (min_side, min_side))


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        # A damaged EXIF block should not cost the user the picture: keep it unrotated.
        return image.copy()


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return (error.strerror or str(error)).lower()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB.

    Transparency is composited onto white, 16-bit and 32-bit greyscale is scaled to
    8 bits by its value range, and colour spaces (CMYK, YCbCr, LAB, HSV) are converted.
    An RGB image is returned as is.
    """
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    if image.has_transparency_data:
        return _composite_on_white(image)
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def _composite_on_white(image: Image.Image) -> Image.Image:
    # White rather than black: transparent logos and icons are usually drawn for a light
    # page, and a black background would turn their dark strokes invisible.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float32)  # also fixes big-endian I;16B
    low, high = _value_range(values, image.mode)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _value_range(values: np.ndarray, mode: str) -> tuple[float, float]:
    """The range that maps to black..white: the type's range for 16-bit data, else the
    smallest usual range ([0, 1] for floats, [0, 255], [0, 65535]) holding every value,
    else the values' own minimum..maximum."""
    if mode.startswith("I;16"):
        return 0.0, 65535.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    # 16-bit PNGs open as mode "I" in older Pillow versions; the ladder keeps them
    # (and 8-bit data stored as I or F) at their true brightness instead of stretching.
    ceilings = (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0)
    for ceiling in ceilings:
        if low >= 0 and high <= ceiling:
            return 0.0, ceiling
    return low, high


def resize_center_crop(
    image: Image.Image, resize: int, crop: int, interpolation: str = "bicubic"
) -> np.ndarray:
    """Resize so the shortest side is ``resize``, then cut the central ``crop`` square.

    Mirrors torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` as used by CLIP
    (224, 224) and MKT (256, 224) evaluation, including its size rounding. Returns a
    ``crop x crop x 3`` uint8 array.
    """
    if interpolation not in INTERPOLATIONS:
        choices = ", ".join(INTERPOLATIONS)
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {choices}")
    if not 0 < crop <= resize:
        raise ValueError(f"crop ({crop}) must be positive and no larger than resize ({resize})")
    image = to_rgb(image)
    width, height = image.size
    if width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    # reducing_gap first shrinks by an integer factor with a box filter, which makes
    # large photos several times faster at a quality indistinguishable from a full
    # bicubic pass.
    resized = image.resize(size, INTERPOLATIONS[interpolation], reducing_gap=3.0)
    left = round((size[0] - crop) / 2.0)
    top = round((size[1] - crop) / 2.0)
    cropped = resized.crop((left, top, left + crop, top + crop))
    return np.array(cropped, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


class ImageFiles:
    """Image files as a map-style dataset (a ``DataLoader`` takes it): item ``i`` is file
    ``i`` decoded and preprocessed; failures come back as a reason, never raised."""

    def __init__(self, paths: Sequence[Path], preprocess: PreprocessConfig) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        try:
            return (
                index,
                prepare(load_image(self.paths[index], 2 * self.preprocess.resize), self.preprocess),
                None,
            )
        except ImageLoadError as error:
            return index, None, error.reason
        except Exception as error:
            return index, None, f"cannot decode ({type(error).__name__}: {error})"


def prepare(image: Image.Image, preprocess: PreprocessConfig) -> np.ndarray:
    """Resize + centre-crop to the model's input (uint8 H x W x 3); normalised later, batched."""
    return resize_center_crop(
        image.convert("RGB"), preprocess.resize, preprocess.image_size, preprocess.interpolation
    )
