"""Images in object stores, ``s3://bucket/key`` and ``gs://bucket/key``, named by their URI.

An image given by URI stays a URI from listing to the results file: a :class:`RemoteImage`
goes where a local image goes as a ``Path`` (the two are an ``ImagePath``), is its own
``results.image_key``, sorts and shards by its URI, and is written in a results row as the
URI, which reading the file turns back into a RemoteImage (:func:`image_ref`).

Buckets are listed (:func:`scan_inputs`) and objects read (:func:`fetched`) through
``pyarrow.fs``, which comes with ``ray[data]``; it is imported only when a URI is given.
Credentials and endpoints are found as pyarrow finds them: for S3 the AWS variables, config
files and instance roles, an S3-compatible store (MinIO, ...) from ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``; for GCS Google's application default credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server), and an emulator from
``STORAGE_EMULATOR_HOST`` (anonymous), as Google's own clients do.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from mkt_tag.errors import ImageLoadError, MktTagError, UsageError

SCHEMES = ("s3", "gs")  # the object stores read: Amazon S3 (and compatible ones), GCS
_PREFIXES = tuple(f"{scheme}://" for scheme in SCHEMES)

# A URI ("s3://bucket/x"), also as a Path folds it ("s3:/bucket/x"). One letter is a drive.
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+")

# Objects fetched at once by one decoding task: their latency, not the bandwidth, is the cost.
_FETCHES = 8

PYARROW_MISSING = "reading s3:// and gs:// URIs needs pyarrow: pip install 'mkt-tag[ray]'"

LOCAL_ENGINE_URI = (
    "the local engine reads local paths: use --engine ray, or mount the bucket "
    "(mountpoint-s3, gcsfuse) and give its path"
)


@dataclass(frozen=True, order=True)
class RemoteImage:
    """An image in an object store, named by its URI ("s3://bucket/photos/a.jpg")."""

    uri: str  # scheme://bucket/key, as listed (or as given, for an input)

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        """The last part of the key ("a.jpg")."""
        return PurePosixPath(self.uri.split("://", 1)[-1]).name

    @property
    def suffix(self) -> str:
        """The extension of the key (".jpg"), as ``Path.suffix``."""
        return PurePosixPath(self.name).suffix

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def path(self) -> str:
        """Bucket and key as pyarrow's file systems name them ("bucket/photos/a.jpg")."""
        return self.uri.split("://", 1)[-1].strip("/")

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]


ImagePath = Path | RemoteImage  # an image where it is: a local path, or a URI


def uri_of(text: str) -> str | None:
    """``text`` as a URI ("s3://bucket/x", also from a Path's "s3:/bucket/x"), or None for a
    local path ("photos", "/mnt/a:b.jpg", "C:/photos")."""
    match = _URI.match(text)
    return None if match is None else f"{match.group(1).lower()}://{text[match.end() :]}"


def parse_input(given: str | os.PathLike[str] | RemoteImage) -> ImagePath:
    """An input as given (a command line's word, a ``TagJob``'s input): a URI of S3 or GCS
    as a RemoteImage, anything else as a local Path.

    Raises:
        UsageError: a URI of another scheme (https://, ...), or without a bucket, naming it.
    """
    if isinstance(given, RemoteImage):
        return given
    uri = uri_of(os.fspath(given))
    if uri is None:
        return Path(given)
    scheme, _, rest = uri.partition("://")
    if scheme not in SCHEMES:
        raise UsageError(
            f"{uri}: mkt-tag reads URIs of s3:// and gs:// only; download or mount the "
            "images and give their path"
        )
    if not rest.strip("/"):  # every bucket of the account: surely not what was meant
        raise UsageError(f"{uri}: name a bucket ({scheme}://BUCKET or {scheme}://BUCKET/PREFIX)")
    return RemoteImage(uri)


def image_ref(written: str | os.PathLike[str] | RemoteImage) -> ImagePath:
    """The image a path in a results row names: "s3://..." and "gs://..." as a RemoteImage,
    anything else as a Path."""
    if isinstance(written, RemoteImage):
        return written
    if isinstance(written, str) and written.startswith(_PREFIXES):
        return RemoteImage(written)
    return Path(written)


def absolute(image: ImagePath) -> ImagePath:
    """A local path made absolute (against the current folder, not resolved); a URI as is."""
    return image if isinstance(image, RemoteImage) else Path(os.path.abspath(image))


def check_uris(
    inputs: Sequence[ImagePath],
    output: Path | None,
    sidecar: str | None = None,
    embed: bool = False,
    engine: str | None = None,
) -> None:
    """Refuse (``UsageError``), before any work, what cannot be done with images given as
    URIs: the local engine (``engine`` "local"), which reads local paths; sidecars and
    keywords, written beside and into local files; a run without a results file. A results
    file at a URI is refused too: it is locked and journaled on this machine."""
    if output is not None and (uri := uri_of(str(output))):
        raise UsageError(
            f"--output {uri}: the results file is written on this machine (locked and "
            "journaled); give a local path, and copy the file to the bucket after the run"
        )
    given = next((image for image in inputs if isinstance(image, RemoteImage)), None)
    if given is None:
        return
    if engine == "local":
        raise UsageError(f"{given}: {LOCAL_ENGINE_URI}")
    for option, used, why in (
        ("--sidecar", sidecar is not None, "a sidecar is written beside its image"),
        ("--embed", embed, "keywords are written into the image files"),
    ):
        if used:
            raise UsageError(f"{option}: not with images given as URIs ({given}): {why}")
    if output is None:
        raise UsageError(f"{given}: give --output, the results file the tags of a bucket go to")


@dataclass
class FoundInputs:
    """What :func:`scan_inputs` found in the local paths and URIs it was given."""

    images: list[ImagePath] = field(default_factory=list)  # sorted, each image once
    errors: list[ImageLoadError] = field(default_factory=list)  # missing inputs, ...
    missing: list[ImagePath] = field(default_factory=list)  # inputs that name nothing
    unreadable: list[ImagePath] = field(default_factory=list)  # formats not read yet


def scan_inputs(inputs: Sequence[ImagePath], recursive: bool = False) -> FoundInputs:
    """``images.scan_inputs`` over local paths and URIs alike: local images first, then
    those of each URI (sorted by URI). A URI naming an object is that image, whatever its
    name; a URI naming a prefix (a "folder") gives the objects under it with an image
    extension, descending into sub-prefixes when ``recursive``; hidden (dot) names are
    skipped, and formats mkt-tag cannot read yet are listed apart, as in a local folder.
    A URI that names nothing, or that cannot be listed (no such bucket, no credentials,
    access denied), is an error naming it."""
    from mkt_tag.images import scan_inputs as scan_local

    local = scan_local([image for image in inputs if isinstance(image, Path)], recursive)
    found = FoundInputs([*local.images], [*local.errors], [*local.missing], [*local.unreadable])
    images: set[RemoteImage] = set()
    unreadable: set[RemoteImage] = set()
    for given in inputs:
        if isinstance(given, RemoteImage):
            try:
                _list(given, recursive, images, unreadable)
            except ImageLoadError as error:
                found.errors.append(error)
                found.missing.append(given)
    found.images += sorted(images)
    found.unreadable += sorted(unreadable)
    return found


def _list(
    given: RemoteImage, recursive: bool, images: set[RemoteImage], unreadable: set[RemoteImage]
) -> None:
    """Add the images ``given`` names to ``images`` (and ``unreadable``).

    Raises:
        ImageLoadError: nothing of that name, or the store refused to list it.
    """
    from mkt_tag.images import IMAGE_EXTENSIONS, UNREADABLE_EXTENSIONS

    fs = _pyarrow_fs()
    try:
        store = _filesystem(given.scheme, given.bucket)
        info = store.get_file_info(given.path)
        if info.type == fs.FileType.File:
            images.add(RemoteImage(f"{given.scheme}://{info.path}"))
            return
        if info.type != fs.FileType.Directory:
            bucket = given.bucket
            there = "/" in given.path and store.get_file_info(bucket).type != fs.FileType.NotFound
            reason = "no object or prefix of that name" if there else "no such bucket"
            raise ImageLoadError(given.uri, reason)
        selector = fs.FileSelector(given.path, recursive=recursive)
        entries = store.get_file_info(selector)
    except (OSError, ValueError) as error:  # pyarrow's errors: OSError, ArrowInvalid
        raise ImageLoadError(given.uri, f"cannot list ({_reason(error)})") from None
    for entry in entries:
        below = entry.path[len(given.path) + 1 :]
        if entry.type != fs.FileType.File or any(p.startswith(".") for p in below.split("/")):
            continue
        suffix = PurePosixPath(entry.path).suffix.lower()
        image = RemoteImage(f"{given.scheme}://{entry.path}")
        if suffix in IMAGE_EXTENSIONS:
            images.add(image)
        elif suffix in UNREADABLE_EXTENSIONS:
            unreadable.add(image)


@contextmanager
def fetched(images: Sequence[ImagePath]) -> Iterator[list[Path | str]]:
    """Each image as a local file to decode: a Path as it is; a RemoteImage's bytes in a
    temporary file named with its extension (decoding goes by it, as for a local file),
    removed on exit; or, for an object that cannot be read, the reason.

    Raises:
        MktTagError: pyarrow is missing (only when some image is a URI).
    """
    files: list[Path | str] = [image if isinstance(image, Path) else "" for image in images]
    remote = [(i, image) for i, image in enumerate(images) if isinstance(image, RemoteImage)]
    if not remote:
        yield files
        return
    with (
        tempfile.TemporaryDirectory(prefix="mkt-tag-") as folder,
        ThreadPoolExecutor(min(_FETCHES, len(remote))) as pool,
    ):
        for (position, image), data in zip(
            remote, pool.map(_read, [image for _, image in remote]), strict=True
        ):
            if isinstance(data, str):
                files[position] = data
                continue
            copy = Path(folder) / f"{position}{image.suffix}"
            copy.write_bytes(data)
            files[position] = copy
        yield files


def _read(image: RemoteImage) -> bytes | str:
    """The object's bytes, or why they cannot be read."""
    try:
        store = _filesystem(image.scheme, image.bucket)
        with store.open_input_stream(image.path) as stream:  # one GET, no range requests
            return bytes(stream.read())
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except (OSError, ValueError) as error:
        return f"cannot read ({_reason(error)})"


def _pyarrow_fs() -> Any:
    try:
        from pyarrow import fs
    except ImportError:
        raise MktTagError(PYARROW_MISSING) from None
    return fs


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, bucket: str) -> Any:
    """pyarrow's file system for a bucket, made once per process (for S3 that asks the
    bucket's region): a decoding task reads many objects of few buckets."""
    fs = _pyarrow_fs()
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if scheme == "gs" and emulator:
        where = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        return fs.GcsFileSystem(anonymous=True, scheme=where.scheme, endpoint_override=where.netloc)
    return fs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def _reason(error: BaseException) -> str:
    """pyarrow's message in one line, without its request ids and errno details."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", lines[0])
    return text.split(". Detail: ")[0]
