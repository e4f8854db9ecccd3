"""Shards: balanced, deterministic whatever the spelling, numbered from 1, read from launchers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mkt_tag.errors import UsageError
from mkt_tag.results import image_key
from mkt_tag.shards import Shard, from_environment, image_keys, parse, resolve, shard_of_name


def test_shards_are_balanced_disjoint_and_cover_every_image(tmp_path):
    images = [tmp_path / f"{i:03d}.jpg" for i in range(103)]
    for count in (1, 2, 3, 7, 103, 200):
        taken = [Shard(index, count).select(images) for index in range(1, count + 1)]
        sizes = [len(shard) for shard in taken]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 103
        assert sorted(image for shard in taken for image in shard) == images  # once each
        for shard in taken:  # contiguous runs of the sorted list
            start = images.index(shard[0]) if shard else 0
            assert shard == images[start : start + len(shard)]


def test_a_shard_does_not_depend_on_spelling_order_or_locale(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["b.jpg", "A.jpg", "a-b.jpg", "a/b.jpg", "é.jpg", "Z.jpg", "ä.jpg", "a b.jpg"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    link = tmp_path / "link"
    link.symlink_to(folder)
    absolute = [folder / name for name in names]
    monkeypatch.chdir(tmp_path)
    relative = [Path("photos") / name for name in reversed(names)]
    via_link = [link / name for name in names]
    for index in (1, 2, 3):
        shard = Shard(index, 3)
        expected = {os.path.realpath(p) for p in shard.select(absolute)}
        assert {os.path.realpath(p) for p in shard.select(relative)} == expected
        assert {os.path.realpath(p) for p in shard.select(via_link)} == expected
    # By code point: "A" (65) < "Z" < "a" < "a b" < "a-b" < "a/b" < "b" < "ä" < "é".
    first = Shard(1, len(names)).select(absolute)
    assert first == [folder / "A.jpg"]
    last = Shard(len(names), len(names)).select(relative)
    assert last == [Path("photos") / "é.jpg"]
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")  # not read: the order is Python's, by code point
    assert Shard(1, len(names)).select(absolute) == first


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/8", "--shard 0/8: shards are numbered from 1, so I must be within 1..8"),
        ("9/8", "--shard 9/8: shards are numbered from 1, so I must be within 1..8"),
        ("1/0", "--shard 1/0: N must be at least 1"),
        ("2", "--shard '2': expected I/N, the I-th of N shards (e.g. 2/8)"),
        ("a/b", "--shard 'a/b': expected I/N"),
        ("-1/2", "--shard '-1/2': expected I/N"),
    ],
)
def test_bad_shards_name_the_flag(text, message):
    with pytest.raises(UsageError) as raised:
        parse(text)
    assert str(raised.value).startswith(message)


def test_parse_and_names():
    assert parse("2/8") == Shard(2, 8) and parse(" 1 / 1 ") == Shard(1, 1)
    assert parse("none") is None and parse("NONE") is None
    assert Shard(2, 8).output(Path("out/tags.csv")) == Path("out/tags.shard-2-of-8.csv")
    assert Shard(2, 8).output(Path("tags.shard-2-of-8.json")) == Path("tags.shard-2-of-8.json")
    assert Shard(3, 8).output(Path("tags.shard-2-of-8.csv")) == Path(
        "tags.shard-2-of-8.shard-3-of-8.csv"
    )
    assert shard_of_name(Path("a/run.1.shard-12-of-16.jsonl")) == (
        Path("a/run.1.jsonl"),
        Shard(12, 16),
    )
    for plain in ("tags.csv", "tags.shard-9-of-8.csv", "tags.shard-0-of-8.csv", "shard-1-of-2.csv"):
        assert shard_of_name(Path(plain)) is None
    with pytest.raises(UsageError):
        Shard(0, 3)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"RANK": "0", "WORLD_SIZE": "4"}, Shard(1, 4)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}, Shard(4, 4)),
        ({"RANK": "0", "WORLD_SIZE": "1"}, None),  # one process: every image
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "8"}, Shard(1, 8)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "8",
                "SLURM_ARRAY_TASK_COUNT": "8",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            Shard(8, 8),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "105",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "101",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            Shard(3, 3),
        ),
        (  # torchrun with 4 processes in task 2 of a 3-task array: 12 shards
            {
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "RANK": "3",
                "WORLD_SIZE": "4",
            },
            Shard(8, 12),
        ),
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}, None),  # a job, not an array
    ],
)
def test_shard_from_launchers(environ, expected):
    shard, source = from_environment(environ)
    assert shard == expected
    assert bool(source) == (expected is not None)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RANK": "1"}, "WORLD_SIZE is not set"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 with WORLD_SIZE=2"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "RANK=0 with WORLD_SIZE=0"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT is not set"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            "SLURM_ARRAY_TASK_ID=9 is not one of SLURM_ARRAY_TASK_COUNT=3",
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "3",
            },
            "SLURM_ARRAY_TASK_ID=3 is not one of SLURM_ARRAY_TASK_COUNT=3 ids from "
            "SLURM_ARRAY_TASK_MIN=1 by 3",
        ),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "two"}, "'two' is not a whole"),
    ],
)
def test_bad_launcher_variables_are_named(environ, named):
    with pytest.raises(UsageError) as raised:
        from_environment(environ)
    assert named in str(raised.value)


def test_the_flag_wins_over_the_environment():
    environ = {"RANK": "1", "WORLD_SIZE": "2"}
    assert resolve("3/4", environ) == (Shard(3, 4), "--shard")
    assert resolve("none", environ) == (None, "--shard")
    assert resolve(None, environ) == (Shard(2, 2), "RANK=1, WORLD_SIZE=2")


def test_image_keys_are_image_key_resolving_each_folder_once(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (real / name).touch()
    (tmp_path / "folder-link").symlink_to(real)
    (real / "file-link.jpg").symlink_to(real / "sub" / "c.jpg")
    (real / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.chdir(real)
    paths = [
        real / "a.jpg",
        Path("b.jpg"),
        Path("sub/../a.jpg"),
        Path("sub") / "c.jpg",
        tmp_path / "folder-link" / "sub" / "c.jpg",
        real / "file-link.jpg",
        real / "dangling.jpg",
        real / "missing.jpg",
        tmp_path / "missing-folder" / "x.jpg",
        tmp_path / "loop" / "x.jpg",
        Path(".."),
    ]
    assert image_keys(paths) == [image_key(path) for path in paths]
    assert image_keys(paths)[5] == str(real / "sub" / "c.jpg")
