"""Shards: one of N balanced, deterministic parts of a list of images, and its results file.

``mkt-tag tag --shard I/N`` tags the I-th of N shards, numbered from 1 as Jest, Playwright
and GNU ``split -n l/K/N`` number theirs; ``2/8`` is the file ``tags.shard-2-of-8.csv``.
Launchers that number from 0 (torchrun's ``RANK``) or from any offset (Slurm job arrays)
are read by :func:`from_environment`.

A shard is the same whatever machine computes it: images are ordered by
``results.image_key`` (the resolved absolute path, or the URI of an image in a bucket)
compared as strings, by code point, so neither the locale nor the spelling of a path
(``photos/a.jpg``, ``./photos/a.jpg``, a symlink) moves an image to another shard. Shards
are contiguous runs of that order (sizes differ by at most one), so an image added later
moves at most one image across each boundary, where a round robin would move nearly every
image to another shard.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mkt_tag.errors import UsageError
from mkt_tag.remote import ImagePath, RemoteImage
from mkt_tag.results import image_key

_Image = TypeVar("_Image", bound=ImagePath)  # a local image, or one named by URI

# tags.shard-2-of-8.csv: the results file of shard 2 of 8 of the output tags.csv
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>[1-9]\d*)-of-(?P<count>[1-9]\d*)$")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` shards, numbered from 1."""

    index: int  # 1..count
    count: int  # how many shards the images are split into

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise UsageError(f"shard {self}: I must be within 1..{self.count} (numbered from 1)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, images: Sequence[_Image]) -> list[_Image]:
        """The images of this shard, in the order given.

        Sorting by key costs O(n log n) and one ``resolve`` per image; nothing else grows
        faster than the list.
        """
        keys = image_keys(images)
        order = sorted(range(len(images)), key=keys.__getitem__)
        start = (self.index - 1) * len(images) // self.count
        stop = self.index * len(images) // self.count
        chosen = set(order[start:stop])
        return [image for position, image in enumerate(images) if position in chosen]

    def output(self, path: Path) -> Path:
        """The results file of this shard for the output ``path`` (``tags.csv`` gives
        ``tags.shard-2-of-8.csv``); a name that already says this shard is kept."""
        path = Path(path)
        named = shard_of_name(path)
        if named is not None and named[1] == self:
            return path
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")


def image_keys(paths: Sequence[ImagePath]) -> list[str]:
    """``results.image_key`` of each path, resolving each folder once: one ``lstat`` per
    path instead of one per component of it (the same keys, several times faster over a
    million paths, which share a few thousand folders). A URI is its own key."""
    folders: dict[str, str] = {}
    keys = []
    for path in paths:
        if isinstance(path, RemoteImage):
            keys.append(path.uri)
            continue
        head, name = os.path.split(os.fspath(path))
        if name in ("", ".", ".."):
            keys.append(image_key(Path(path)))
            continue
        real = folders.get(head)
        if real is None:
            real = folders[head] = image_key(Path(head or "."))
        key = os.path.join(real, name)
        try:
            linked = stat.S_ISLNK(os.lstat(key).st_mode)
        except OSError:  # missing or unreachable: resolving keeps the name as it is
            linked = False
        keys.append(image_key(Path(path)) if linked else key)
    return keys


def shard_of_name(path: Path) -> tuple[Path, Shard] | None:
    """The output and shard a results file's name says (``tags.shard-2-of-8.csv``:
    ``tags.csv``, 2/8), or None for a name without a shard."""
    path = Path(path)
    found = _SHARD_NAME.match(path.stem)
    if found is None:
        return None
    index, count = int(found["index"]), int(found["count"])
    if index > count:
        return None
    return path.with_name(found["stem"] + path.suffix), Shard(index, count)


def parse(text: str, source: str = "--shard") -> Shard | None:
    """``"2/8"`` as the second of 8 shards; ``"none"`` as no shard (the environment is not
    read either).

    Raises:
        UsageError: not I/N with 1 <= I <= N, naming ``source``.
    """
    if text.strip().lower() == "none":
        return None
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if found is None:
        raise UsageError(f"{source} {text!r}: expected I/N, the I-th of N shards (e.g. 2/8)")
    index, count = int(found[1]), int(found[2])
    if count < 1:
        raise UsageError(f"{source} {text}: N must be at least 1")
    if not 1 <= index <= count:
        raise UsageError(
            f"{source} {text}: shards are numbered from 1, so I must be within 1..{count}"
        )
    return Shard(index, count)


def from_environment(environ: Mapping[str, str]) -> tuple[Shard | None, str]:
    """The shard a launcher gives this process, and where it was read (for messages).

    torchrun sets ``RANK`` (from 0) and ``WORLD_SIZE``; a Slurm job array sets
    ``SLURM_ARRAY_TASK_ID`` (from ``SLURM_ARRAY_TASK_MIN``, by ``SLURM_ARRAY_TASK_STEP``)
    and ``SLURM_ARRAY_TASK_COUNT``. With both (torchrun in each task of an array), each
    process gets its own shard: task-major, rank-minor. One process in all is no shard.

    Raises:
        UsageError: a variable that is not a number, or out of range, named.
    """
    parts: list[tuple[int, int, str]] = []  # (index from 0, count, source)
    if "SLURM_ARRAY_TASK_ID" in environ:
        parts.append(_slurm(environ))
    if "RANK" in environ or "WORLD_SIZE" in environ:
        rank = _number(environ, "RANK")
        world = _number(environ, "WORLD_SIZE")
        if world < 1 or not 0 <= rank < world:
            raise UsageError(
                f"RANK={rank} with WORLD_SIZE={world}: RANK must be within 0..WORLD_SIZE-1"
            )
        parts.append((rank, world, f"RANK={rank}, WORLD_SIZE={world}"))
    index, count = 0, 1
    for part_index, part_count, _ in parts:
        index, count = index * part_count + part_index, count * part_count
    if count == 1:
        return None, ""
    return Shard(index + 1, count), "; ".join(source for _, _, source in parts)


def _slurm(environ: Mapping[str, str]) -> tuple[int, int, str]:
    task = _number(environ, "SLURM_ARRAY_TASK_ID")
    count = _number(environ, "SLURM_ARRAY_TASK_COUNT")
    first = _number(environ, "SLURM_ARRAY_TASK_MIN", 0)
    step = _number(environ, "SLURM_ARRAY_TASK_STEP", 1)
    position, remainder = divmod(task - first, step) if step >= 1 else (-1, 0)
    if count < 1 or remainder or not 0 <= position < count:
        raise UsageError(
            f"SLURM_ARRAY_TASK_ID={task} is not one of SLURM_ARRAY_TASK_COUNT={count} ids "
            f"from SLURM_ARRAY_TASK_MIN={first} by {step}: use an array of consecutive ids "
            "(--array=1-8), or give --shard I/N"
        )
    return position, count, f"SLURM_ARRAY_TASK_ID={task} of {count}"


def _number(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None:
        if default is None:
            raise UsageError(f"{name} is not set (a launcher sets it beside the others)")
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number") from None


def resolve(text: str | None, environ: Mapping[str, str]) -> tuple[Shard | None, str]:
    """The shard of a ``tag`` run: ``--shard`` when given (``text``), else the launcher's
    (``from_environment``); with where it came from."""
    if text is not None:
        return parse(text), "--shard"
    return from_environment(environ)
