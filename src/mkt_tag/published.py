"""Trained MKT models that their authors publish, fetched and imported on first use.

``mkt-nus-wide`` is the model of the MKT paper (He et al., AAAI 2023), trained on NUS-WIDE's
925 seen labels by the reference code (github.com/sunanhe/MKT, MIT licence), whose authors
publish its two stages and NUS-WIDE's label lists on Google Drive. ``install`` makes it an
mkt-tag checkpoint in the model cache, ``CACHE/models/mkt-nus-wide``:

1. the two checkpoint files and the two label lists are downloaded (``drive.fetch``:
   resumable, checked, never read while partial) into ``CACHE/downloads/mkt-nus-wide``;
2. the label lists become the 1,006 labels in the paper's order (925 seen, then 81 unseen),
   bundled as ``labels.txt``, and the 925 as ``seen_labels.txt``;
3. the files go through the import of ``mkt-tag import-reference``
   (``paper_checkpoints.import_reference``: every tensor checked against the backbone,
   nothing unpickled) into a staging folder that is renamed into place when complete;
4. the raw downloads are deleted.

A failure at any step leaves no model folder behind, so the next call starts again (a
download resumes where it stopped).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mkt_tag import drive, hub
from mkt_tag.drive import DownloadError, DriveFile
from mkt_tag.errors import CheckpointError, ModelError, ModelNotCachedError, UsageError

SEEN_FILE = "seen_labels.txt"  # in a checkpoint: the labels it was trained on, one a line
MANUAL = (
    "By hand: download the files named in docs/models.md#the-papers-model and run "
    "`mkt-tag import-reference`."
)


@dataclass(frozen=True)
class PublishedModel:
    """A trained model published as the reference code's two stage files, and its labels."""

    name: str
    description: str
    backbone: str  # what the stages were trained from
    stage1: DriveFile  # the image side
    stage2: DriveFile  # prompt tuning
    labels_folder: str  # Drive folder id holding the label lists
    seen: tuple[str, int]  # label list of the training labels, in the folder, and its length
    unseen: tuple[str, int]  # label list of the held-out labels, and its length
    size_mb: int  # about what the checkpoint takes in the cache, besides its backbone


PUBLISHED: dict[str, PublishedModel] = {
    "mkt-nus-wide": PublishedModel(
        name="mkt-nus-wide",
        description="MKT trained on NUS-WIDE (the paper's model), 1,006 labels bundled",
        backbone="ViT-B-16:openai",
        stage1=DriveFile("158ntqLvepVklwmY1PvlqIhguv7wN6SZI", "stage1.pth", "torch"),
        stage2=DriveFile("1TBh1eWDLhHTjTfnRRfZULpe4DfPj7u9O", "stage2.pth", "torch"),
        labels_folder="1kTb83_p92fM04OAkGyiHypOgwtxc4wVa",
        seen=("Concepts925.txt", 925),
        unseen=("Concepts81.txt", 81),
        size_mb=60,
    ),
}


def locate(model: str | Path, root: Path, download: bool = True) -> str | Path:
    """``model`` as the loaders take it: a published model's name becomes its checkpoint
    folder (installed first if needed: ``install``), any other id stays as it is."""
    return install(str(model), root, download) if str(model) in PUBLISHED else model


def bundled_labels(model: str | Path, root: Path) -> Path:
    """The label file a checkpoint bundles (``labels.txt``: mkt-nus-wide's 1,006 labels, or
    those given to ``import-reference --labels``), a published model installed first.

    Raises:
        UsageError: the model bundles no labels (``--labels`` is then needed).
        ModelError: the model cannot be found or installed.
    """
    from mkt_tag import identity

    checkpoint = identity.resolve(locate(model, root), root).checkpoint
    if checkpoint is None or not (checkpoint / identity.LABELS_FILE).is_file():
        raise UsageError(
            f"--labels: needed with --model {model}, which bundles no labels (a "
            f"checkpoint's {identity.LABELS_FILE})"
        )
    return checkpoint / identity.LABELS_FILE


def folder(name: str, root: Path) -> Path:
    """Where the published model ``name`` lives in the cache ``root`` once installed."""
    return root / "models" / name


def is_installed(name: str, root: Path) -> bool:
    from mkt_tag.identity import is_checkpoint

    return is_checkpoint(folder(name, root))


def install(name: str, root: Path, download: bool = True, quiet: bool = False) -> Path:
    """The checkpoint folder of the published model ``name``, installed first if needed
    (gdown's progress bars on stderr unless ``quiet``).

    Raises:
        ModelNotCachedError: not installed, and downloads are off (``download`` False or
            ``HF_HUB_OFFLINE``).
        DownloadError: a file could not be downloaded, or is not what it must be.
        CheckpointError: the files do not fit the model (their tensors were refused).
    """
    model = PUBLISHED[name]
    target = folder(name, root)
    if is_installed(name, root):
        return target
    if not download or hub.offline():
        raise ModelNotCachedError(
            f"{name} is not in the cache ({target}) and downloads are off: run `mkt-tag "
            f"models download {name}` on a machine with a network (then copy {target}), "
            f"or {MANUAL[0].lower()}{MANUAL[1:]}"
        )
    raw = root / "downloads" / name
    stage1 = drive.fetch(model.stage1, raw, quiet, MANUAL)
    stage2 = drive.fetch(model.stage2, raw, quiet, MANUAL)
    listed = drive.list_folder(model.labels_folder, MANUAL)
    lists = [
        _label_list(listed, raw, list_name, count, quiet)
        for list_name, count in (model.seen, model.unseen)
    ]
    labels = raw / "labels.txt"
    labels.write_text("".join(f"{label}\n" for labels_ in lists for label in labels_), "utf-8")
    staging = target.with_name(f".{name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    from mkt_tag import paper_checkpoints

    try:
        paper_checkpoints.import_reference(
            stage1, staging, stage2, labels=labels, backbone=model.backbone, cache_dir=root
        )
    except CheckpointError as error:
        shutil.rmtree(staging, ignore_errors=True)
        for path in (stage1, stage2):  # not the files this model needs: fetch anew next time
            path.unlink(missing_ok=True)
        raise CheckpointError(
            f"{name}: the downloaded files do not fit: {error}. {MANUAL}"
        ) from None
    (staging / SEEN_FILE).write_text("".join(f"{label}\n" for label in lists[0]), "utf-8")
    os.replace(staging, target)
    shutil.rmtree(raw, ignore_errors=True)
    return target


def _label_list(listed: dict[str, str], raw: Path, name: str, count: int, quiet: bool) -> list[str]:
    """A label list of the Drive folder, downloaded and checked: ``count`` distinct labels."""
    if name not in listed:
        there = ", ".join(sorted(listed)) or "nothing"
        raise DownloadError(f"{name}: not in the model's Drive folder (it lists {there}). {MANUAL}")
    path = drive.fetch(DriveFile(listed[name], name, "text"), raw, quiet, MANUAL)
    labels = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    if len(labels) != count or len(set(labels)) != count:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: {len(labels)} labels ({len(set(labels))} distinct) where the model "
            f"has {count}. {MANUAL}"
        )
    return labels


def seen_labels(checkpoint: Path) -> list[str] | None:
    """The labels a checkpoint was trained on (its ``seen_labels.txt``), None if it does not
    say."""
    path = checkpoint / SEEN_FILE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: cannot read ({error})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def untrained(
    labels: list[str],
    model: str | Path,
    cache_dir: str | Path | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list[bool]:
    """Which of ``labels`` the checkpoint ``model`` was not trained on, where it lists those
    it was (``seen_labels.txt``: mkt-nus-wide's 925); all False where it does not say.
    ``on_note`` is told how many are which."""
    from mkt_tag import identity, vocab

    root = hub.cache_dir(cache_dir)
    folder = identity.resolve(locate(model, root, False), root, download=False).checkpoint
    seen = seen_labels(folder) if folder is not None else None
    if seen is None or folder is None:
        return [False] * len(labels)
    trained = {vocab.normalise(label) for label in seen}
    unseen = [vocab.normalise(label) not in trained for label in labels]
    if on_note is not None:
        on_note(
            f"{model} was trained on {len(seen)} labels ({folder / SEEN_FILE}): "
            f"{unseen.count(False)} of the {len(labels)} labels are among them (the seen row), "
            f"{unseen.count(True)} are not (the ZSL row); --unseen overrides"
        )
    return unseen
