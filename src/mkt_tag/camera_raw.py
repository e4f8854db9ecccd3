"""Camera raw files (.cr2, .nef, .arw, .dng, ...) through LibRaw, by way of rawpy.

rawpy is an optional extra (``pip install 'mkt-tag[raw]'``) and is imported on the first
raw file, never with this module. A raw file nearly always carries the camera's own JPEG
rendering of the photo: that preview is decoded when it is large enough for what was asked,
which takes a fraction of the time of developing the sensor data and looks as the camera
showed it. Otherwise LibRaw develops the sensor data (camera white balance, 8 bits, half size
when that is still large enough). Either way the picture comes out upright.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mkt_tag.errors import ImageLoadError

_NAMES = (
    ".3fr .ari .arw .bay .cr2 .cr3 .crw .dcr .dng .erf .fff .gpr .iiq .k25 .kdc .mef .mos "
    ".mrw .nef .nrw .orf .pef .raf .raw .rw2 .rwl .sr2 .srf .srw .x3f"
)
CAMERA_RAW_EXTENSIONS = frozenset(_NAMES.split())

INSTALL_HINT = "pip install 'mkt-tag[raw]'"

# A preview whose shape is within 5% of the sensor's is the whole photo; previews of another
# shape are letterboxed or cropped, and the sensor data is developed instead.
ASPECT_TOLERANCE = 0.05
# Without a size asked for, only a full-size preview will do (within 10%: cameras leave a
# few border pixels of the sensor out of their JPEG).
FULL_SIZE = 0.9

# LibRaw's flip (bit 4: transpose, 2: flip vertically, 1: mirror) as an EXIF orientation,
# and each EXIF orientation as the Pillow transpose that shows the picture upright.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

# What Pillow raises on a damaged preview: the sensor data is developed instead.
_PREVIEW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, UnidentifiedImageError)

_import_lock = threading.Lock()


def rawpy_installed() -> bool:
    """Whether rawpy can be found, without importing it (and LibRaw with it)."""
    try:
        return importlib.util.find_spec("rawpy") is not None
    except (ImportError, ValueError):
        return False


def install_hint(unreadable: Iterable[Path]) -> str | None:
    """What to install to read the camera raw files among ``unreadable`` (files a folder
    scan skipped), as a line for its summary; None when there are none."""
    if any(path.suffix.lower() in CAMERA_RAW_EXTENSIONS for path in unreadable):
        return f"to read camera raw files: {INSTALL_HINT}"
    return None


class RawFile:
    """A camera raw file opened by LibRaw: its size, then its picture (``image``).

    Use as a context manager; every failure is an ImageLoadError naming the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rawpy = _import_rawpy(path)
        with self._libraw_errors(), warnings.catch_warnings():
            # rawpy warns in every forked worker that OpenMP may deadlock there; LibRaw
            # runs single-threaded here (_import_rawpy), which is what the warning asks for.
            warnings.filterwarnings("ignore", "rawpy is being used", RuntimeWarning)
            self._raw = _imread(self._rawpy, path)
        sizes = self._raw.sizes
        self.stored = (sizes.width, sizes.height)  # as on the sensor, before any rotation
        self.orientation = _FLIP_TO_ORIENTATION.get(sizes.flip & 7, 1)

    def __enter__(self) -> RawFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._raw.close()

    @property
    def size(self) -> tuple[int, int]:
        """Width and height of the upright picture."""
        width, height = self.stored
        return (height, width) if self.orientation in _SWAPS_SIDES else (width, height)

    def image(self, min_side: int | None = None) -> Image.Image:
        """The upright picture: the embedded preview when its shortest side is at least
        ``min_side`` (without ``min_side``: when it is full size), else the developed
        sensor data, at half size when that keeps the shortest side at least ``min_side``."""
        preview = self._preview(min_side)
        return preview if preview is not None else self._develop(min_side)

    def _preview(self, min_side: int | None) -> Image.Image | None:
        rawpy = self._rawpy
        try:
            thumb = self._raw.extract_thumb()
        except (rawpy.LibRawError, rawpy.NotSupportedError, NotImplementedError):
            return None  # none, of a kind LibRaw does not extract, or damaged
        try:
            preview: Image.Image
            if thumb.format == rawpy.ThumbFormat.JPEG:
                # The raw's orientation is applied, never the EXIF of the JPEG: LibRaw writes
                # the raw's into a preview without EXIF of its own, and applying both would
                # turn it twice. A camera's own EXIF agrees with its raw; where it does not,
                # preview and developed picture still come out the same way up.
                preview = Image.open(io.BytesIO(thumb.data))  # reads the header only
            else:
                preview = Image.fromarray(_eight_bits(np.asarray(thumb.data)))
            turn = self._turn(preview.size, min_side)
            if turn is None:
                return None
            if min_side is not None:
                preview.draft("RGB", (min_side, min_side))
            preview.load()
        except _PREVIEW_ERRORS:
            return None
        return preview.transpose(_UPRIGHT[turn]) if turn in _UPRIGHT else preview

    def _turn(self, size: tuple[int, int], min_side: int | None) -> int | None:
        """The orientation to apply to a preview of ``size`` pixels, or None when it is too
        small or of another shape than the photo."""
        orientation, (width, height) = self.orientation, self.stored
        needed = min_side if min_side is not None else FULL_SIZE * min(width, height)
        if min(size) < needed:
            return None
        shape = size[0] / size[1]
        if _close(shape, width / height):
            return orientation
        if _close(shape, height / width) and orientation in _SWAPS_SIDES:
            return 1  # stored upright already: turning it again would lay it on its side
        return None

    def _develop(self, min_side: int | None) -> Image.Image:
        half = min_side is not None and min(self.stored) // 2 >= min_side
        with self._libraw_errors():
            # LibRaw turns the picture upright itself (its user_flip left at the file's).
            pixels = self._raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)
        return Image.fromarray(_eight_bits(pixels))

    @contextmanager
    def _libraw_errors(self) -> Iterator[None]:
        rawpy, path = self._rawpy, self.path
        try:
            yield
        except rawpy.LibRawFileUnsupportedError:
            reason = "not a camera raw file LibRaw reads (damaged, or from a camera it lacks)"
            raise ImageLoadError(path, reason) from None
        except rawpy.LibRawTooBigError:
            raise ImageLoadError(path, "too large for LibRaw") from None
        except (rawpy.LibRawUnsufficientMemoryError, MemoryError):
            raise ImageLoadError(path, "not enough memory to develop it") from None
        except (rawpy.LibRawError, rawpy.NotSupportedError, NotImplementedError):
            raise ImageLoadError(path, "truncated or corrupt image data") from None
        except OSError as error:  # LibRaw's own open failed: rawpy passes the errno on
            raise ImageLoadError(path, _errno_reason(error)) from None


def _import_rawpy(path: Path) -> ModuleType:
    """rawpy, with LibRaw's own OpenMP runtime set to one thread.

    A forked worker that decodes a raw hangs forever once its parent has developed one with
    OpenMP threads (the child inherits a thread pool whose threads it lacks). Images are
    decoded in parallel by mkt-tag itself, so LibRaw loses little by running on one thread;
    the runtime reads OMP_NUM_THREADS once, when rawpy loads it, and the variable is put back
    at once. (Where torch is loaded first, LibRaw uses torch's OpenMP, which torch sets to one
    thread in DataLoader workers.)
    """
    try:
        with _import_lock:
            if "rawpy" in sys.modules:
                import rawpy
            else:
                saved = os.environ.get("OMP_NUM_THREADS")
                os.environ["OMP_NUM_THREADS"] = "1"
                try:
                    import rawpy
                finally:
                    if saved is None:
                        del os.environ["OMP_NUM_THREADS"]
                    else:
                        os.environ["OMP_NUM_THREADS"] = saved
    except ImportError:
        reason = f"reading {path.suffix.lower()} files needs rawpy: {INSTALL_HINT}"
        raise ImageLoadError(path, reason) from None
    return rawpy


def _imread(rawpy: ModuleType, path: Path) -> Any:
    name = os.fsdecode(path)
    try:
        name.encode("utf-8")  # what rawpy hands LibRaw
    except UnicodeEncodeError:  # a name in another encoding: give LibRaw the bytes instead
        with path.open("rb") as file:
            return rawpy.imread(file)
    # By name, LibRaw reads only what it needs: for a preview, a few of the file's megabytes.
    return rawpy.imread(name)


def _eight_bits(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


def _close(shape: float, other: float) -> bool:
    return abs(shape - other) <= ASPECT_TOLERANCE * other


def _errno_reason(error: OSError) -> str:
    code = error.args[0][0] if error.args and isinstance(error.args[0], tuple) else error.errno
    return os.strerror(code).lower() if isinstance(code, int) else str(error)
