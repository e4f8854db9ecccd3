"""scripts/nus_wide.py on a tiny fabricated NUS-WIDE in the BiAM/LESA layout."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

from mkt_tag import datasets as data
from tests.conftest import make_photo

ROOT = Path(__file__).resolve().parent.parent
TAGS = ["sky", "beach", "surfing", "cat", "sunrise", "old_car"]  # 1,000 in the real list
CONCEPTS = ["beach", "cat", "zebra"]  # 81 in the real list; "zebra" is no tag
SEEN = ["sky", "surfing", "sunrise", "old_car"]
UNSEEN = CONCEPTS


def load_script():
    spec = importlib.util.spec_from_file_location("nus_wide", ROOT / "scripts" / "nus_wide.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def nus(tmp_path: Path) -> Path:
    root = tmp_path / "NUS-WIDE"
    (root / "NUS_WID_Tags").mkdir(parents=True)
    (root / "ConceptsList").mkdir()
    (root / "features").mkdir()
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("\n".join(TAGS) + "\n")
    (root / "ConceptsList" / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    with h5py.File(root / "features" / "nus_wide_train.h5", "w") as h5:
        for name, labels in [
            ("actor_0001_111.jpg", [1, -1, 0, -1]),
            ("beach_sand_0002_222.jpg", [-1, 1, -1, 1]),  # a folder name with "_"
            ("sky_0003_333.jpg", [-1, -1, -1, -1]),  # no positive
        ]:
            h5.create_dataset(f"{name}-labels", data=np.int8(labels))
            h5.create_dataset(f"{name}-features", data=np.zeros((4, 2), np.float32))
    with h5py.File(root / "features" / "nus_wide_test.h5", "w") as h5:
        h5.create_dataset("zoo_0009_999.jpg-labels", data=np.int8([-1, 1, -1, -1, 1, -1, 1]))
        h5.create_dataset("zoo_0009_999.jpg-labels_81", data=np.int8([1, -1, 1]))
    for name in ("actor/0001_111.jpg", "beach_sand/0002_222.jpg", "sky/0003_333.jpg"):
        make_photo(root / "Flickr" / name, size=(8, 8))
    make_photo(root / "Flickr" / "zoo" / "0009_999.jpg", size=(8, 8))
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_conversion_gives_files_mkt_tag_trains_on(nus, tmp_path, capsys):
    out = tmp_path / "out"
    assert load_script().main(["--root", str(nus), "--out", str(out)]) == 0
    assert (out / "seen.txt").read_text().split() == SEEN  # tag-list order, concepts removed
    assert (out / "unseen.txt").read_text().split() == UNSEEN
    assert (out / "all.txt").read_text().split() == SEEN + UNSEEN
    assert rows(out / "train.csv") == [
        {"path": "actor/0001_111.jpg", "labels": "sky", "unknown": "sunrise"},
        {"path": "beach_sand/0002_222.jpg", "labels": "surfing|old_car", "unknown": ""},
        {"path": "sky/0003_333.jpg", "labels": "", "unknown": ""},
    ]
    printed = capsys.readouterr().out
    assert "train.csv: 3 images, 2 with a positive label" in printed
    assert "labels: 4 seen, 3 unseen" in printed
    assert f"--images {nus / 'Flickr'}" in printed

    train = data.load(out / "train.csv", SEEN, images_root=nus / "Flickr", keep_unlabelled=False)
    assert [p.name for p in train.paths] == ["0001_111.jpg", "0002_222.jpg"]
    assert train.targets.tolist() == [[1, -1, 0, -1], [-1, 1, -1, 1]]  # +1 / -1 / 0 kept
    assert train.problems.counts == {data.UNLABELLED: 1}

    zsl = data.load(out / "test_zsl.csv", UNSEEN, images_root=nus / "Flickr")
    assert zsl.targets.tolist() == [[1, -1, 1]]
    gzsl = data.load(out / "test_gzsl.csv", SEEN + UNSEEN, images_root=nus / "Flickr")
    assert gzsl.targets.tolist() == [[-1, 1, -1, -1, 1, -1, 1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("short", "has 3 labels, the label lists give 4"),
        ("no labels", "no '*-labels' datasets"),
        ("not h5", "cannot open as HDF5"),
        ("no tags", "TagList1k.txt: cannot read"),
    ],
)
def test_layout_errors_are_one_line(nus, tmp_path, capsys, change, message):
    train = nus / "features" / "nus_wide_train.h5"
    if change == "short":
        with h5py.File(train, "a") as h5:
            h5.create_dataset("zz_0001_1.jpg-labels", data=np.int8([1, 1, 1]))
    elif change == "no labels":
        with h5py.File(train, "w") as h5:
            h5.create_dataset("a_0001_1.jpg-features", data=np.zeros(3))
    elif change == "not h5":
        train.write_text("not hdf5")
    else:
        (nus / "NUS_WID_Tags" / "TagList1k.txt").unlink()
    assert load_script().main(["--root", str(nus), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


def test_image_names_to_paths():
    image_path = load_script().image_path
    assert image_path("actor_0001_111.jpg") == "actor/0001_111.jpg"
    assert image_path("a_b_c_0001_111.jpg") == "a_b_c/0001_111.jpg"
    assert image_path("odd.jpg") == "odd.jpg"
