"""`mkt-tag tag --shard` and `mkt-tag merge` through CliRunner: files, exit codes, one-line
errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_PARTIAL, EXIT_USAGE
from mkt_tag.results import Tag, TagResult, read_results, write_results
from tests.conftest import TINY_CONFIG

runner = CliRunner()
LAUNCHERS = ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    """Tests run outside torchrun and Slurm arrays, wherever they run."""
    for name in (*LAUNCHERS, "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"):
        monkeypatch.delenv(name, raising=False)


def tag(*args: str | Path, env: dict[str, str] | None = None):
    arguments = ["tag", *map(str, args), "--model", str(TINY_CONFIG), "-b", "1"]
    return runner.invoke(app, arguments, env=env)


def merge(*args: str | Path):
    return runner.invoke(app, ["merge", *map(str, args)])


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_shards_from_torchrun_and_slurm_merge_into_one_run(photos, label_file, tmp_path):
    assert tag(photos, "-r", "-l", label_file, "-o", tmp_path / "one.csv").exit_code == 0
    for rank in ("0", "1"):  # torchrun, two processes
        result = tag(
            photos,
            "-r",
            "-l",
            label_file,
            "-o",
            tmp_path / "t.csv",
            env={"RANK": rank, "WORLD_SIZE": "2"},
        )
        assert result.exit_code == 0, result.output
        assert (
            f"shard {int(rank) + 1}/2 (RANK={rank}, WORLD_SIZE=2): 3 of 6 images" in result.stderr
        )
    for task in ("5", "6", "7"):  # a Slurm array --array=5-7
        env = {
            "SLURM_ARRAY_TASK_ID": task,
            "SLURM_ARRAY_TASK_COUNT": "3",
            "SLURM_ARRAY_TASK_MIN": "5",
        }
        assert (
            tag(photos, "-r", "-l", label_file, "-o", tmp_path / "s.jsonl", env=env).exit_code == 0
        )
    assert sorted(p.name for p in tmp_path.glob("?.shard-*")) == [
        "s.shard-1-of-3.jsonl",
        "s.shard-2-of-3.jsonl",
        "s.shard-3-of-3.jsonl",
        "t.shard-1-of-2.csv",
        "t.shard-2-of-2.csv",
    ]
    for parts in (sorted(tmp_path.glob("t.shard-*")), sorted(tmp_path.glob("s.shard-*"))):
        out = tmp_path / "merged.csv"
        result = merge(out, *parts, "--expect", photos, "-r")
        assert result.exit_code == 0, result.output
        assert f"6 images from {len(parts)} parts (6 rows) into {out}; 0 missing" in result.stderr
        assert out.read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_the_flag_wins_and_none_tags_every_image(photos, label_file, tmp_path):
    env = {"RANK": "1", "WORLD_SIZE": "2"}
    result = tag(photos, "-l", label_file, "-o", tmp_path / "t.csv", "--shard", "none", env=env)
    assert result.exit_code == 0 and "shard" not in result.stderr
    assert len(read_results(tmp_path / "t.csv")) == 5
    result = tag(photos, "-l", label_file, "-o", tmp_path / "t.csv", "--shard", "3/5", env=env)
    assert result.exit_code == 0 and "shard 3/5 (--shard): 1 of 5 images" in result.stderr
    assert len(read_results(tmp_path / "t.shard-3-of-5.csv")) == 1
    result = tag(photos, "-l", label_file, "--shard", "2/5")  # to stdout: one image
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--shard", "0/4"], {}, "--shard 0/4: shards are numbered from 1"),
        (["--shard", "5/4"], {}, "--shard 5/4: shards are numbered from 1"),
        (["--shard", "two"], {}, "--shard 'two': expected I/N"),
        ([], {"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
        ([], {"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 with WORLD_SIZE=2"),
        ([], {"RANK": "0"}, "WORLD_SIZE is not set"),
        (
            [],
            {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"},
            "SLURM_ARRAY_TASK_ID=4 is not one of SLURM_ARRAY_TASK_COUNT=3",
        ),
    ],
)
def test_bad_shards_are_usage_errors_naming_the_flag_or_variable(
    photos, label_file, tmp_path, args, env, message
):
    result = tag(photos, "-l", label_file, "-o", tmp_path / "t.csv", *args, env=env)
    assert one_line_error(result, EXIT_USAGE).startswith(f"error: {message}")
    assert list(tmp_path.glob("t*")) == []


def rows(folder: Path, run: str = "a1b2c3d4e5f6") -> list[TagResult]:
    return [TagResult(folder / f"{i}.jpg", [Tag("cat", i / 10)], run) for i in range(8)]


def test_merge_reports_missing_shards_and_conflicts_with_exit_3(tmp_path):
    results = rows(tmp_path)
    for index, chunk in ((1, results[:3]), (3, results[6:])):
        write_results(tmp_path / f"tags.shard-{index}-of-3.csv", chunk)
    (tmp_path / "tags.shard-2-of-3.csv.partial.jsonl").write_text("")
    conflicting = tmp_path / "late.json"
    write_results(conflicting, [TagResult(results[0].path, [Tag("dog", 0.5)], results[0].run)])
    parts = [tmp_path / "tags.shard-1-of-3.csv", tmp_path / "tags.shard-3-of-3.csv", conflicting]
    result = merge(tmp_path / "tags.csv", *parts)
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert (
        f"missing part: {tmp_path / 'tags.shard-2-of-3.csv'} (its run was interrupted: run "
        "that shard again)" in result.stderr
    )
    assert f"duplicate: {results[0].path}: rows differ in {parts[0]} and {conflicting}; kept" in (
        result.stderr
    )
    assert "1 missing, 1 conflicting" in result.stderr
    assert len(read_results(tmp_path / "tags.csv")) == 5


def test_merge_names_missing_images_ten_at_a_time(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.jpg").touch()
    write_results(tmp_path / "part.jsonl", rows(folder))
    result = merge(tmp_path / "out.csv", tmp_path / "part.jsonl", "--expect", folder)
    assert result.exit_code == EXIT_PARTIAL
    assert result.stderr.count("missing: ") == 10 and "... and 12 more missing" in result.stderr
    result = merge(tmp_path / "out.csv", tmp_path / "part.jsonl", "--expect", folder, "-v")
    assert result.stderr.count("missing: ") == 22 and f"missing: {folder / '9.jpg'}" in (
        result.stderr
    )


def test_merge_errors_are_one_line_and_write_nothing(tmp_path):
    write_results(tmp_path / "a.csv", rows(tmp_path))
    write_results(tmp_path / "b.csv", rows(tmp_path / "other", run="ffff00001111"))
    out = tmp_path / "out.csv"
    line = one_line_error(merge(out, tmp_path / "a.csv", tmp_path / "b.csv"), EXIT_ERROR)
    assert line.startswith(f"error: {tmp_path / 'b.csv'}: its rows are from run ffff00001111")
    assert not out.exists()
    result = merge(out, tmp_path / "a.csv", tmp_path / "b.csv", "--force")
    assert result.exit_code == 0 and "rows of 2 different runs merged" in result.stderr
    assert len(read_results(out)) == 16
    (tmp_path / "bad.json").write_text("{")
    line = one_line_error(merge(out, tmp_path / "bad.json"), EXIT_ERROR)
    assert line.startswith(f"error: {tmp_path / 'bad.json'}: malformed results file")
    line = one_line_error(merge(tmp_path / "out.xlsx", tmp_path / "a.csv"), EXIT_ERROR)
    assert "out.xlsx: use a .csv, .json or .jsonl file name" in line
    assert merge(out).exit_code == EXIT_USAGE  # no parts
