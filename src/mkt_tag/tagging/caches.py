"""Caches that make re-tagging fast: label embeddings and image features, in SQLite files.

- ``labels.sqlite``: one embedding per (model and prompt context, label text). Small
  (2 KB per label for ViT-B/16), always on: an unchanged label is never encoded twice.
- ``features.sqlite``: each image's projected global and patch features (float16, about
  200 KB per image for ViT-B/16), keyed by path, size, modification time and model. Opt-in
  (``mkt-tag tag --feature-cache``): with it, re-tagging after a vocabulary edit skips the
  image tower entirely.

Keys are exact: they hash the model's weight files (or their content-addressed hub paths),
its configuration, prompt context, precision and device type, so a different checkpoint,
template or precision never reuses stale vectors. A damaged or foreign file is detected,
moved aside and rebuilt with a warning; it is never trusted.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkt_tag import hub

APPLICATION_ID = 0x4D4B5454  # "MKTT" in SQLite's header: marks the file as ours
SCHEMA_VERSION = 1
LABELS_FILE = "labels.sqlite"
FEATURES_FILE = "features.sqlite"


class _Store:
    """An SQLite file of ours; recreated (the old one moved aside) when damaged or foreign."""

    SCHEMA = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        self.db = self._open()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; crash-safe
        application, version = (
            db.execute("PRAGMA application_id").fetchone()[0],
            db.execute("PRAGMA user_version").fetchone()[0],
        )
        empty = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if empty:
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.executescript(self.SCHEMA)
        elif application != APPLICATION_ID or version != SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError("not an mkt-tag cache of this version")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as error:
            aside = self.path.with_name(self.path.name + ".broken")
            self.warnings.append(
                f"{self.path}: unusable cache ({error}); moved to {aside.name} "
                "and started a new one"
            )
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    source.replace(Path(str(aside) + suffix))
            return self._connect()

    def _guard(self, error: sqlite3.DatabaseError) -> None:
        """A damaged file found mid-run: start a new one, and treat the request as a miss."""
        self.warnings.append(f"{self.path}: cache damaged ({error}); rebuilding it")
        self.db.close()
        self.path.replace(self.path.with_name(self.path.name + ".broken"))
        self.db = self._connect()

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in self.path.parent.glob(self.path.name + "*")
            if not p.name.endswith(".broken")
        )

    def close(self) -> None:
        self.db.close()


class LabelCache(_Store):
    """Label embeddings (float32) by (text-side model key, label text)."""

    SCHEMA = """CREATE TABLE labels (model TEXT NOT NULL, text TEXT NOT NULL,
                vector BLOB NOT NULL, PRIMARY KEY (model, text)) WITHOUT ROWID;"""

    def get(self, model: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(texts))
        try:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    f"SELECT text, vector FROM labels WHERE model=? AND text IN ({marks})",
                    [model, *chunk],
                )
                found.update((text, np.frombuffer(blob, np.float32)) for text, blob in rows)
        except sqlite3.DatabaseError as error:
            self._guard(error)
            return {}
        return found

    def put(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [
            (model, text, np.ascontiguousarray(v, np.float32).tobytes())
            for text, v in vectors.items()
        ]
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?)", rows)
        except sqlite3.DatabaseError as error:
            self._guard(error)

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM labels").fetchone()[0])


class FeatureCache(_Store):
    """Projected image features by (image-side model key, file path, size, mtime)."""

    SCHEMA = """CREATE TABLE features (model TEXT NOT NULL, path TEXT NOT NULL,
                size INTEGER NOT NULL, mtime INTEGER NOT NULL, tokens INTEGER NOT NULL,
                dim INTEGER NOT NULL, data BLOB NOT NULL,
                PRIMARY KEY (model, path)) WITHOUT ROWID;"""

    @staticmethod
    def _identity(path: Path) -> tuple[str, int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def get(self, model: str, paths: Sequence[Path]) -> dict[int, np.ndarray]:
        """Features of the images that are cached and unchanged, by position in ``paths``."""
        found: dict[int, np.ndarray] = {}
        try:
            for index, path in enumerate(paths):
                identity = self._identity(path)
                if identity is None:
                    continue
                row = self.db.execute(
                    "SELECT size, mtime, tokens, dim, data FROM features WHERE model=? AND path=?",
                    (model, identity[0]),
                ).fetchone()
                if row is None or (row[0], row[1]) != identity[1:]:
                    continue
                tokens, dim, data = row[2:]
                if len(data) != tokens * dim * 2:  # a torn or foreign row: recompute it
                    continue
                found[index] = np.frombuffer(data, np.float16).reshape(tokens, dim)
        except sqlite3.DatabaseError as error:
            self._guard(error)
            return {}
        return found

    def put(self, model: str, items: Iterable[tuple[Path, np.ndarray]]) -> None:
        rows = []
        for path, tokens in items:
            identity = self._identity(path)
            if identity is not None:
                array = np.ascontiguousarray(tokens, np.float16)
                rows.append((model, *identity, array.shape[0], array.shape[1], array.tobytes()))
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
        except sqlite3.DatabaseError as error:
            self._guard(error)

    def stats(self) -> dict[str, Any]:
        """Images, bytes of feature data, and images per model key."""
        images, data = self.db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM features"
        ).fetchone()
        models = dict(self.db.execute("SELECT model, count(*) FROM features GROUP BY model"))
        return {"images": int(images), "data_bytes": int(data), "models": models}


def open_caches(root: Path, features: bool) -> tuple[LabelCache, FeatureCache | None]:
    """The label cache (always) and the feature cache (when asked for) under ``root``."""
    return LabelCache(root / LABELS_FILE), FeatureCache(root / FEATURES_FILE) if features else None


# --- what the cache folder holds, and clearing it (``mkt-tag cache``) -------------------


@dataclass
class CachePart:
    """One part of the cache folder, as ``mkt-tag cache info`` shows it."""

    name: str  # "models", "label embeddings" or "image features"
    entries: int  # downloaded models, label texts, or images
    size_bytes: int  # on disk
    models: list[str] = field(default_factory=list)  # downloaded repos, or feature model keys
    bytes_per_entry: float = 0.0  # image features only: feature data per image


def cache_parts(root: Path) -> tuple[list[CachePart], list[str]]:
    """What the cache folder ``root`` holds, and warnings about damaged cache files."""
    warnings: list[str] = []
    models = hub.hub_cache(root)
    downloaded = sorted(models.glob("models--*")) if models.is_dir() else []
    parts = [
        CachePart(
            "models",
            len(downloaded),
            _tree_size(models) if models.is_dir() else 0,
            [folder.name[len("models--") :].replace("--", "/") for folder in downloaded],
        )
    ]
    if (root / LABELS_FILE).exists():
        labels = LabelCache(root / LABELS_FILE)
        parts.append(CachePart("label embeddings", labels.count(), labels.size_bytes()))
        warnings += labels.warnings
        labels.close()
    if (root / FEATURES_FILE).exists():
        features = FeatureCache(root / FEATURES_FILE)
        stats = features.stats()
        per_image = stats["data_bytes"] / stats["images"] if stats["images"] else 0.0
        parts.append(
            CachePart(
                "image features",
                stats["images"],
                features.size_bytes(),
                sorted(stats["models"]),
                per_image,
            )
        )
        warnings += features.warnings
        features.close()
    return parts, warnings


@dataclass
class Cleared:
    """What ``clear_cache`` deleted."""

    parts: list[str]  # file names (labels.sqlite, features.sqlite) and "models"
    freed_bytes: int


def clear_cache(
    root: Path, features: bool = False, labels: bool = False, models: bool = False
) -> Cleared:
    """Delete cached image features and/or label embeddings (both when neither is named),
    and the downloaded models too with ``models``."""
    names = [
        name
        for name, wanted in ((FEATURES_FILE, features), (LABELS_FILE, labels))
        if wanted or not (features or labels)
    ]
    freed = 0
    for name in names:
        for path in root.glob(name + "*"):  # the file, its -wal and -shm, a .broken copy
            freed += path.stat().st_size
            path.unlink()
    if models:
        names.append("models")
        if hub.hub_cache(root).is_dir():
            freed += _tree_size(hub.hub_cache(root))
            shutil.rmtree(hub.hub_cache(root))
    return Cleared(names, freed)


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
