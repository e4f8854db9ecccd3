"""Caches that make re-tagging fast: label embeddings and image features, in SQLite files.

- ``labels.sqlite``: one embedding per (model and prompt context, label text). Small
  (2 KB per label for ViT-B/16), always on: an unchanged label is never encoded twice.
- ``features.sqlite``: each image's projected global and patch features (float16, about
  200 KB per image for ViT-B/16), keyed by path, size, modification time and model. Opt-in
  (``mkt-tag tag --feature-cache``): with it, re-tagging after a vocabulary edit skips the
  image tower entirely.

Keys are exact: they hash the model's weight files (or their content-addressed hub paths),
its configuration, prompt context, precision and device type, so a different checkpoint,
template or precision never reuses stale vectors.

Nothing in a cache is trusted. Every row carries a checksum of its key and vector: a row
that fails it (a flipped byte, a torn or foreign blob) is never used; it is computed again,
and replaced, with one warning. A damaged or foreign file (SQLite's own checks, our
application id, an older format) is moved aside as ``*.broken`` and rebuilt with a warning.
A write that fails for another reason (disk full, read-only file, locked by another
process) is not damage: the file is left as it was, one warning says so, and the store
stops writing for the rest of the run; reading goes on, and tagging never stops for a cache.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkt_tag import hub
from mkt_tag.files import digest, tree_size

APPLICATION_ID = 0x4D4B5454  # "MKTT" in SQLite's header: marks the file as ours
SCHEMA_VERSION = 2  # 2: a checksum with every row (files of version 1 are moved aside)
LABELS_FILE = "labels.sqlite"
FEATURES_FILE = "features.sqlite"
# SQLite's primary result codes that mean the file itself is damaged or not a database.
# Every other error (SQLITE_FULL, SQLITE_READONLY, SQLITE_BUSY, SQLITE_IOERR, ...) is a
# failed operation on a file that may be fine: it is never moved aside for that.
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE_WORDS = ("malformed", "not a database")  # Python 3.10 has no sqlite_errorcode

Warn = Callable[[str], None]


class _NotOurs(Exception):
    """The file is an SQLite database, but not an mkt-tag cache of this format."""


def _is_damage(error: Exception) -> bool:
    if isinstance(error, _NotOurs):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES  # extended codes keep the primary in the low byte
    return any(word in str(error) for word in _DAMAGE_WORDS)


class _Store:
    """An SQLite file of ours; moved aside and rebuilt when damaged or foreign, left alone
    (and no longer written) when a write fails for another reason."""

    SCHEMA = ""
    TIMEOUT = 30.0  # seconds to wait for another process's write lock

    def __init__(self, path: Path, on_warning: Warn | None = None) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []  # every warning so far, also passed to ``on_warning``
        self.on_warning = on_warning
        self.writable = True  # False after a failed write: the file stays as it was
        self.db: sqlite3.Connection | None = None  # None: the cache cannot be used
        self.db = self._open()

    def report_to(self, on_warning: Warn) -> None:
        """Pass the warnings so far to ``on_warning``, and every later one as it arises."""
        for line in self.warnings:
            on_warning(line)
        self.on_warning = on_warning

    def _warn(self, line: str) -> None:
        self.warnings.append(line)
        if self.on_warning is not None:
            self.on_warning(line)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.TIMEOUT)
        try:
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
            elif application != APPLICATION_ID:
                raise _NotOurs("not an mkt-tag cache")
            elif version != SCHEMA_VERSION:
                raise _NotOurs(
                    f"cache format version {version}, this mkt-tag uses {SCHEMA_VERSION}"
                )
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection | None:
        try:
            return self._connect()
        except (sqlite3.Error, _NotOurs, OSError) as error:
            if _is_damage(error):
                return self._rebuild(f"unusable cache ({error})")
            self._unusable(error)
            return None

    def _rebuild(self, reason: str) -> sqlite3.Connection | None:
        """Move the damaged file (and its log) aside as ``*.broken``; start a new one."""
        self.close()
        aside = self.path.with_name(self.path.name + ".broken")
        try:
            for suffix in ("", "-wal", "-shm"):  # a stale log must not meet the new file
                source = Path(str(self.path) + suffix)
                if source.exists():
                    source.replace(Path(str(aside) + suffix))
            self._warn(f"{self.path}: {reason}; moved to {aside.name} and started a new one")
            return self._connect()
        except (sqlite3.Error, _NotOurs, OSError) as error:
            self._unusable(error)
            return None

    def _unusable(self, error: BaseException) -> None:
        """The file cannot be opened (a file in the way of its folder, no permission, ...)."""
        self._warn(f"{self.path}: cannot use the cache ({error}); going on without it")
        self.writable = False

    def _failed(self, error: sqlite3.Error, writing: bool) -> None:
        """A query failed: damage is moved aside and rebuilt; anything else leaves the file
        as it is, and stops the writes (or, for a read, the whole cache) for this run."""
        if _is_damage(error):
            self.db = self._rebuild(f"cache damaged ({error})")
        elif writing:
            self._warn(
                f"{self.path}: cannot write to the cache ({error}); it is kept as it was, "
                "and not written to again in this run"
            )
            self.writable = False
        else:
            self._warn(f"{self.path}: cannot read the cache ({error}); going on without it")
            self.close()
            self.writable = False

    def _damaged_rows(self, count: int, what: str) -> None:
        if count:
            self._warn(
                f"{self.path}: {count} damaged {what} ignored (checksum mismatch); "
                "computing them again"
            )

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.db is None or not self.writable or not rows:
            return
        try:
            with self.db:
                self.db.executemany(sql, rows)
        except sqlite3.Error as error:
            self._failed(error, writing=True)

    def _query(self, sql: str, default: list[Any]) -> list[Any]:
        """All rows of a query, or ``default`` when the cache cannot be read."""
        try:
            return default if self.db is None else self.db.execute(sql).fetchall()
        except sqlite3.Error as error:
            self._failed(error, writing=False)
            return default

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in self.path.parent.glob(self.path.name + "*")
            if not p.name.endswith(".broken")
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class LabelCache(_Store):
    """Label embeddings (float32) by (text-side model key, label text)."""

    SCHEMA = """CREATE TABLE labels (model TEXT NOT NULL, text TEXT NOT NULL,
                vector BLOB NOT NULL, checksum TEXT NOT NULL,
                PRIMARY KEY (model, text)) WITHOUT ROWID;"""

    def get(self, model: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached embeddings of ``texts``; a row that fails its checksum is left out."""
        found: dict[str, np.ndarray] = {}
        if self.db is None:
            return found
        wanted = list(dict.fromkeys(texts))
        damaged = 0
        try:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    "SELECT text, vector, checksum FROM labels "
                    f"WHERE model=? AND text IN ({marks})",
                    [model, *chunk],
                )
                for text, blob, stored in rows:
                    blob = bytes(blob)
                    if stored != digest(model, text, blob) or not blob or len(blob) % 4:
                        damaged += 1
                        continue
                    found[text] = np.frombuffer(blob, np.float32)
        except sqlite3.Error as error:
            self._failed(error, writing=False)
            return {}
        self._damaged_rows(damaged, "label embedding(s)")
        return found

    def put(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        rows = []
        for text, vector in vectors.items():
            blob = np.ascontiguousarray(vector, np.float32).tobytes()
            rows.append((model, text, blob, digest(model, text, blob)))
        self._write("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", rows)

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM labels", [(0,)])[0][0])


class FeatureCache(_Store):
    """Projected image features by (image-side model key, file path, size, mtime)."""

    SCHEMA = """CREATE TABLE features (model TEXT NOT NULL, path TEXT NOT NULL,
                size INTEGER NOT NULL, mtime INTEGER NOT NULL, tokens INTEGER NOT NULL,
                dim INTEGER NOT NULL, data BLOB NOT NULL, checksum TEXT NOT NULL,
                PRIMARY KEY (model, path)) WITHOUT ROWID;"""

    @staticmethod
    def _identity(path: Path) -> tuple[str, int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def get(self, model: str, paths: Sequence[Path]) -> dict[int, np.ndarray]:
        """Features of the images that are cached and unchanged, by position in ``paths``;
        a row that fails its checksum is left out."""
        found: dict[int, np.ndarray] = {}
        if self.db is None:
            return found
        damaged = 0
        try:
            for index, path in enumerate(paths):
                identity = self._identity(path)
                if identity is None:
                    continue
                row = self.db.execute(
                    "SELECT size, mtime, tokens, dim, data, checksum FROM features "
                    "WHERE model=? AND path=?",
                    (model, identity[0]),
                ).fetchone()
                if row is None or (row[0], row[1]) != identity[1:]:
                    continue  # not cached, or the file changed since
                tokens, dim, data, stored = row[2], row[3], bytes(row[4]), row[5]
                expected = digest(model, *identity, tokens, dim, data)
                if stored != expected or len(data) != tokens * dim * 2:
                    damaged += 1
                    continue
                found[index] = np.frombuffer(data, np.float16).reshape(tokens, dim)
        except sqlite3.Error as error:
            self._failed(error, writing=False)
            return {}
        self._damaged_rows(damaged, "image feature row(s)")
        return found

    def put(self, model: str, items: Iterable[tuple[Path, np.ndarray]]) -> None:
        rows = []
        for path, tokens in items:
            identity = self._identity(path)
            if identity is not None:
                array = np.ascontiguousarray(tokens, np.float16)
                shape, data = array.shape, array.tobytes()
                check = digest(model, *identity, shape[0], shape[1], data)
                rows.append((model, *identity, shape[0], shape[1], data, check))
        self._write("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def stats(self) -> dict[str, Any]:
        """Images, bytes of feature data, and images per model key."""
        sql = "SELECT count(*), coalesce(sum(length(data)), 0) FROM features"
        images, data = self._query(sql, [(0, 0)])[0]
        models = dict(self._query("SELECT model, count(*) FROM features GROUP BY model", []))
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
            tree_size(models) if models.is_dir() else 0,
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
            freed += tree_size(hub.hub_cache(root))
            shutil.rmtree(hub.hub_cache(root))
    return Cleared(names, freed)
