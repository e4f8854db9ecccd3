"""Turn NUS-WIDE in the BiAM/LESA layout into mkt-tag training and test files.

The zero-shot split of LESA and BiAM (also used by MKT): 925 seen labels (Flickr tags, noisy)
for training, 81 unseen labels (the human-annotated concepts) for testing. Its files, under
ROOT (BiAM's ``datasets/NUS-WIDE``)::

    NUS_WID_Tags/TagList1k.txt      1,000 tags, one a line; seen = those not in Concepts81
    ConceptsList/Concepts81.txt     the 81 concepts = the unseen labels
    features/nus_wide_train.h5      per image "<name>-labels": int8, one per seen label
    features/nus_wide_test.h5       per image "<name>-labels": seen then unseen labels,
                                    and "<name>-labels_81": one per unseen label
    Flickr/<folder>/<file>.jpg      the images; "<name>" is "<folder>_<file>"

Label values are +1 (positive), -1 (negative) and 0 (unknown, ignored), as mkt-tag reads them.
Other datasets in the h5 files (BiAM's "<name>-features") are ignored; no pickle is read.

Written to OUT::

    seen.txt, unseen.txt, all.txt   label files (all = seen then unseen: the GZSL vocabulary)
    train.csv                       path,labels,unknown over the seen labels
    test_zsl.csv                    over the unseen labels (from "-labels_81")
    test_gzsl.csv                   over all labels (from the test "-labels")

Paths are relative to the image folder: train with ``--images ROOT/Flickr``. A label of the
vocabulary not listed in a row is a negative, so the files list positives and unknowns only.

    pip install 'mkt-tag[nus]'      # h5py
    python scripts/nus_wide.py --root datasets/NUS-WIDE --out data/nus-wide
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LABELS_SUFFIX = "-labels"
UNSEEN_SUFFIX = "-labels_81"


class LayoutError(Exception):
    """The input files are not in the expected layout (one line, names the file)."""


def read_lines(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path}: cannot read ({error})") from None
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise LayoutError(f"{path}: no labels")
    return labels


def split_labels(tags: Sequence[str], concepts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(seen, unseen): the tags that are not concepts, in tag-list order; the concepts."""
    unseen = set(concepts)
    return [tag for tag in tags if tag not in unseen], list(concepts)


def image_path(name: str) -> str:
    """ "actor_0001_123.jpg" -> "actor/0001_123.jpg" (folder names may hold underscores)."""
    parts = name.split("_")
    if len(parts) < 3:
        return name
    return f"{'_'.join(parts[:-2])}/{parts[-2]}_{parts[-1]}"


def records(h5: Any, suffix: str, width: int, source: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(image name, label vector) of every "<name><suffix>" dataset, in sorted name order."""
    found = 0
    for key in sorted(h5.keys()):
        if not key.endswith(suffix):
            continue
        values = np.asarray(h5[key][()]).reshape(-1)
        if values.shape[0] != width:
            raise LayoutError(
                f"{source}: {key} has {values.shape[0]} labels, the label lists give {width}"
            )
        found += 1
        yield key[: -len(suffix)], values
    if not found:
        raise LayoutError(f"{source}: no '*{suffix}' datasets (not a BiAM/LESA NUS-WIDE file?)")


def write_rows(
    path: Path, rows: Iterator[tuple[str, np.ndarray]], labels: Sequence[str]
) -> tuple[int, int]:
    """Write path,labels,unknown rows; return (rows, rows with a positive)."""
    count = positive = 0
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "labels", "unknown"])
        for name, values in rows:
            positives = [labels[i] for i in np.flatnonzero(values > 0)]
            unknown = [labels[i] for i in np.flatnonzero(values == 0)]
            writer.writerow([image_path(name), "|".join(positives), "|".join(unknown)])
            count += 1
            positive += bool(positives)
    partial.replace(path)
    return count, positive


def convert(
    tags_file: Path, concepts_file: Path, train_h5: Path, test_h5: Path, out: Path
) -> dict[str, tuple[int, int]]:
    """Write the label files and the three CSVs; return (rows, rows with a positive) of each."""
    try:
        import h5py
    except ImportError:
        raise LayoutError("h5py is needed: pip install 'mkt-tag[nus]'") from None
    seen, unseen = split_labels(read_lines(tags_file), read_lines(concepts_file))
    every = seen + unseen
    out.mkdir(parents=True, exist_ok=True)
    for name, labels in (("seen", seen), ("unseen", unseen), ("all", every)):
        (out / f"{name}.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    counts = {}
    for source, jobs in (
        (train_h5, [("train.csv", LABELS_SUFFIX, seen)]),
        (
            test_h5,
            [("test_zsl.csv", UNSEEN_SUFFIX, unseen), ("test_gzsl.csv", LABELS_SUFFIX, every)],
        ),
    ):
        try:
            h5 = h5py.File(source, "r")
        except OSError as error:
            raise LayoutError(f"{source}: cannot open as HDF5 ({error})") from None
        with h5:
            for name, suffix, labels in jobs:
                rows = records(h5, suffix, len(labels), source)
                counts[name] = write_rows(out / name, rows, labels)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="BiAM's datasets/NUS-WIDE")
    parser.add_argument("--out", type=Path, required=True, help="folder for the output files")
    parser.add_argument("--tags", type=Path, help="[ROOT/NUS_WID_Tags/TagList1k.txt]")
    parser.add_argument("--concepts", type=Path, help="[ROOT/ConceptsList/Concepts81.txt]")
    parser.add_argument("--train-h5", type=Path, help="[ROOT/features/nus_wide_train.h5]")
    parser.add_argument("--test-h5", type=Path, help="[ROOT/features/nus_wide_test.h5]")
    args = parser.parse_args(argv)
    root = args.root
    try:
        counts = convert(
            args.tags or root / "NUS_WID_Tags" / "TagList1k.txt",
            args.concepts or root / "ConceptsList" / "Concepts81.txt",
            args.train_h5 or root / "features" / "nus_wide_train.h5",
            args.test_h5 or root / "features" / "nus_wide_test.h5",
            args.out,
        )
    except LayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, (rows, positive) in counts.items():
        print(f"{args.out / name}: {rows} images, {positive} with a positive label")
    seen = len(read_lines(args.out / "seen.txt"))
    unseen = len(read_lines(args.out / "unseen.txt"))
    print(f"labels: {seen} seen, {unseen} unseen")
    print(
        f"train: mkt-tag train --data {args.out / 'train.csv'} --labels {args.out / 'seen.txt'} "
        f"--images {root / 'Flickr'} --val-fraction 0.05 --out runs/nus-wide"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
