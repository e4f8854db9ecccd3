"""Where each image's sidecar is, and which images would share one.

A sidecar is named after its image: ``photo.jpg.xmp`` ("full", darktable and digiKam) or
``photo.xmp`` ("stem", Lightroom), where photo.jpg and photo.png would collide.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mkt_tag.images import IMAGE_EXTENSIONS

SIDECAR_FORMATS = ("json", "txt", "xmp")
SIDECAR_NAMINGS = ("full", "stem")


def sidecar_path(image: Path, fmt: str, naming: str = "full") -> Path:
    """The sidecar file of ``image``: ``photo.jpg.xmp`` with naming "full" (darktable,
    digiKam; photo.jpg and photo.png do not collide) or ``photo.xmp`` with "stem"
    (Lightroom)."""
    if fmt not in SIDECAR_FORMATS:
        raise ValueError(f"unknown sidecar format {fmt!r}; choose one of {SIDECAR_FORMATS}")
    if naming == "full":
        return image.with_name(f"{image.name}.{fmt}")
    if naming == "stem":
        return image.with_suffix(f".{fmt}")
    raise ValueError(f"unknown sidecar naming {naming!r}; choose one of {SIDECAR_NAMINGS}")


def sidecar_collisions(
    images: Sequence[Path], fmt: str, naming: str = "full"
) -> dict[Path, list[Path]]:
    """The images of ``images`` whose sidecar another image would write too, each with
    those other images (in ``images``, or an image file beside it that a folder scan finds).

    Only "stem" naming collides: photo.jpg and photo.png both give photo.xmp, and writing
    both would leave the tags of whichever came last. Where the folder ignores case
    (macOS, Windows), Photo.jpg and photo.png collide as well.
    """
    sidecar_path(Path("photo.jpg"), fmt, naming)  # an unknown format or naming raises
    if naming != "stem":
        return {}
    folders: dict[Path, _Folder] = {}
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for image in images:
        if image.parent not in folders:
            folders[image.parent] = _Folder(image.parent, image.name)
        groups[folders[image.parent].key(sidecar_path(image, fmt, naming).name)].append(image)
    for directory, folder in folders.items():
        for name in folder.image_names():
            key = folder.key(sidecar_path(Path(name), fmt, naming).name)
            if key in groups:
                groups[key].append(directory / name)
    given = set(images)
    collisions: dict[Path, list[Path]] = {}
    for members in groups.values():
        files = _distinct_files(members)
        if len(files) < 2:
            continue
        for image in dict.fromkeys(members):
            if image in given:
                collisions[image] = [other for other in files if not _same_file(other, image)]
    return collisions


class _Folder:
    """A folder of images: its identity, whether it ignores case, its image files."""

    def __init__(self, path: Path, sample: str) -> None:
        self.path = path
        try:
            self.resolved = str(path.resolve())
        except (OSError, RuntimeError):
            self.resolved = os.path.abspath(path)
        self.ignores_case = _ignores_case(path, sample)

    def key(self, name: str) -> tuple[str, str]:
        return self.resolved, name.casefold() if self.ignores_case else name

    def image_names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        return [
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
            and entry.is_file()
        ]


def _ignores_case(folder: Path, sample: str) -> bool:
    """Whether ``folder`` (holding the file ``sample``) finds files by any case of their name."""
    swapped = sample.swapcase()
    if swapped == sample:
        return False
    try:
        return os.path.samefile(folder / sample, folder / swapped)
    except OSError:
        return False


def _distinct_files(paths: list[Path]) -> list[Path]:
    """``paths`` less the second spelling of any file (by device and inode)."""
    seen: dict[object, Path] = {}
    for path in paths:
        try:
            info = path.stat()
            identity: object = (info.st_dev, info.st_ino)
        except OSError:
            identity = os.path.abspath(path)
        seen.setdefault(identity, path)
    return list(seen.values())


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.abspath(first) == os.path.abspath(second)
