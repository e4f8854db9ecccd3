"""Fault injection on `mkt-tag tag`: nothing lost and nothing silently wrong.

One test per fault of the issue "Nothing lost and nothing silently wrong"; each docstring
names the fault it reproduces. Runs that would need a model they must not load get a model
id that is not in the (empty, offline) cache: loading it fails at once with exit 1, so a run
that exits otherwise has not loaded it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_PARTIAL
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()
UNCACHED_MODEL = "ViT-B-32:openai"  # never in the test cache, and downloads are off


def tag(*args: str | Path, model: str | Path = TINY_CONFIG):
    return runner.invoke(app, ["tag", *map(str, args), "--model", str(model)])


def rows(path: Path) -> dict[str, tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return {row["path"]: (row["tags"], row["scores"]) for row in csv.DictReader(handle)}


# --- item 1: two runs writing one results file --------------------------------------


# Each run takes a while to write its results file, as one of thousands of rows does: the
# runs then overlap as they did in the field, where 1,500 rows lost up to 400.
SLOW_WRITE = """
import sys, time
import mkt_tag.results as results
from mkt_tag.cli import main
write = results.write_results
def slow_write(*args, **kwargs):
    time.sleep(2)
    write(*args, **kwargs)
results.write_results = slow_write
main()
"""


def command(photos: Path, labels: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        SLOW_WRITE,
        "tag",
        str(photos),
        "--labels",
        str(labels),
        "--model",
        str(TINY_CONFIG),
        "-o",
        str(output),
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "-q",
    ]


@pytest.mark.slow
def test_two_concurrent_runs_on_one_output_keep_every_row(tmp_path: Path, label_file: Path):
    """Fault 1: two runs writing the same -o file at the same time lost rows, both exit 0.

    Each run kept its own view of the file and wrote it at the end; now the second waits
    for the first and adds its rows to the first's."""
    expected = set()
    for folder in ("d1", "d2"):
        for i in range(30):
            expected.add(str(make_photo(tmp_path / folder / f"{i:02d}.jpg", seed=i)))
    output = tmp_path / "d.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            command(tmp_path / folder, label_file, output),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for folder in ("d1", "d2")
    ]
    ended = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, ended, strict=True):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    assert set(rows(output)) == expected
    assert not output.with_name("d.csv.partial.jsonl").exists()
    assert sum("waiting: another mkt-tag run is writing" in err for _, err in ended) == 1


# --- item 4 of the issue: --sidecar-naming stem collisions -------------------------


def test_stem_sidecar_collisions_are_refused_before_the_model_loads(tmp_path: Path, label_file):
    """Fault (issue item 4): with --sidecar-naming stem, a.jpg and a.jpeg both wrote a.xmp
    and the last silently won. Both are now named, neither sidecar is written, exit 3,
    and this is found before the model is loaded."""
    photos = tmp_path / "photos"
    make_photo(photos / "a.jpg", seed=1)
    make_photo(photos / "a.jpeg", seed=2)
    make_photo(photos / "photo.jpg", seed=3)
    make_photo(photos / "photo.png", seed=4)
    result = tag(
        photos,
        "--labels",
        label_file,
        "--sidecar",
        "xmp",
        "--sidecar-naming",
        "stem",
        model=UNCACHED_MODEL,
    )
    assert result.exit_code == EXIT_PARTIAL, result.output
    lines = result.stderr.splitlines()
    for first, second, sidecar in [
        ("a.jpeg", "a.jpg", "a.xmp"),
        ("photo.jpg", "photo.png", "photo.xmp"),
    ]:
        assert any(first in line and second in line and sidecar in line for line in lines), first
    assert not list(photos.glob("*.xmp"))
    assert "Traceback" not in result.output


def test_stem_sidecar_collisions_leave_the_other_images_tagged(tmp_path: Path, label_file):
    """Fault (issue item 4), with other images in the run: they are tagged, the pair is not,
    and an a.xmp already there (whose image?) is not taken as the pair's "done"."""
    photos = tmp_path / "photos"
    make_photo(photos / "a.jpg", seed=1)
    make_photo(photos / "a.jpeg", seed=2)
    make_photo(photos / "b.png", seed=3)
    (photos / "a.xmp").write_text("left by someone")
    args = [photos, "--labels", label_file, "--sidecar", "xmp", "--sidecar-naming", "stem"]
    result = tag(*args)
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert (photos / "b.xmp").is_file()
    assert (photos / "a.xmp").read_text() == "left by someone"
    assert "tagged 1" in result.stderr and "failed 2" in result.stderr


# --- item 5: temporary files left by kill -9 ----------------------------------------


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from mkt_tag import files
def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = killed
files.atomic_write_bytes(Path(sys.argv[1]), b"")
"""


def test_temporaries_of_killed_runs_are_removed_and_nothing_else(tmp_path: Path, label_file):
    """Fault (issue item 5): kill -9 inside an atomic write left `.NAME.PID.HEX.tmp` files in
    photo folders that later runs never removed. Now a run removes those of processes that
    are gone, in the folders it writes to, and leaves every other file alone."""
    photos = tmp_path / "photos"
    make_photo(photos / "a.jpg", seed=1)
    make_photo(photos / "b.jpg", seed=2)
    # A real kill -9 between writing the temporary file and renaming it.
    for target in (photos / "a.jpg.xmp", tmp_path / "out.csv"):
        killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], check=False)
        assert killed.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in [*photos.iterdir(), *tmp_path.iterdir()] if ".tmp" in p.name)
    assert len(leftovers) == 2 and all(name.startswith(".") for name in leftovers)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        kept = [
            photos / f".b.jpg.xmp.{alive.pid}.0123abcd.tmp",  # a live process's write
            photos / ".b.jpg.xmp.tmp",  # not our pattern
            photos / "b.jpg.xmp.1.0123abcd.tmp",  # not hidden: not ours
            photos / ".notes.1.xyz.tmp",  # not hex
            photos / ".notes.1.0123abcd.tmp.bak",
        ]
        for path in kept:
            path.write_bytes(b"")
        result = tag(photos, "--labels", label_file, "--sidecar", "xmp", "-o", tmp_path / "out.csv")
        assert result.exit_code == 0, result.output
    finally:
        alive.kill()
        alive.wait()
    left = sorted(p.name for p in [*photos.iterdir(), *tmp_path.iterdir()] if ".tmp" in p.name)
    assert left == sorted(path.name for path in kept)


# --- item 6: one image, two spellings -------------------------------------------------


def test_one_image_spelled_two_ways_is_one_row(
    tmp_path: Path, label_file, monkeypatch: pytest.MonkeyPatch
):
    """Fault (issue item 6): `tag photos -o x.csv` then `tag /abs/path/photos/ -o x.csv`
    gave two rows per image. Images are now identified by their resolved path."""
    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.png", "c.jpg"):
        make_photo(photos / name)
    (tmp_path / "link").symlink_to(photos)
    monkeypatch.chdir(tmp_path)
    assert tag("photos", "--labels", label_file, "-o", "x.csv").exit_code == 0
    first = rows(tmp_path / "x.csv")
    for spelling in (f"{photos}/", str(tmp_path / "link"), "./photos/../photos"):
        again = tag(spelling, "--labels", label_file, "-o", "x.csv")
        assert again.exit_code == 0, again.output
        assert "skipped 3 current" in again.stderr
    assert rows(tmp_path / "x.csv") == first
    # The written rule: absolute paths, whatever the spelling on the command line.
    assert sorted(first) == [str(photos / name) for name in ("a.jpg", "b.png", "c.jpg")]


def test_results_files_of_earlier_versions_are_still_matched(
    tmp_path: Path, label_file, monkeypatch: pytest.MonkeyPatch
):
    """Fault (issue item 6), older files: rows written with the path as given (relative to
    the directory the run started in) are the same images, not new ones."""
    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg"):
        make_photo(photos / name)
    old = "path,tags,scores\nphotos/a.jpg,cat,0.5000\nphotos/b.jpg,dog,0.2500\n"
    (tmp_path / "x.csv").write_text(old)
    monkeypatch.chdir(tmp_path)
    result = tag(photos, "--labels", label_file, "-o", "x.csv")
    assert result.exit_code == 0, result.output
    # Matched, and stale: those rows do not say which model made them.
    assert "2 images (0 new, 2 stale, 0 current): tagged 2" in result.stderr
    assert len(rows(tmp_path / "x.csv")) == 2


# --- item 7: --overwrite on a subset ------------------------------------------------


def test_overwrite_of_some_images_keeps_the_other_rows(tmp_path: Path, photos: Path, label_file):
    """Fault (issue item 7): `tag one.jpg -o all.csv --overwrite` left all.csv with one row.
    The rows of the images tagged are replaced; the others are kept."""
    out = tmp_path / "all.csv"
    assert tag(photos, "--labels", label_file, "-o", out, "--top-k", "2").exit_code == 0
    before = rows(out)
    assert len(before) == 5
    result = tag(photos / "a.jpg", "--labels", label_file, "-o", out, "--top-k", "4", "--overwrite")
    assert result.exit_code == 0, result.output
    after = rows(out)
    assert set(after) == set(before)
    a_jpg = str(photos / "a.jpg")
    assert after[a_jpg][0].count("|") == 3  # re-tagged with 4 tags
    assert {k: v for k, v in after.items() if k != a_jpg} == {
        k: v for k, v in before.items() if k != a_jpg
    }


# --- item 11: image files mkt-tag cannot read ----------------------------------------


def test_unreadable_image_types_are_counted_and_listed(
    tmp_path: Path, photos: Path, label_file, monkeypatch: pytest.MonkeyPatch
):
    """Fault (issue item 11): files with image extensions mkt-tag does not read (JPEG XL, RAW,
    ...) were skipped in a folder walk without a word. The summary counts them by
    extension; --verbose lists each one. Camera raw files are read with rawpy; here as
    where it is not installed, with the line that says how to install it."""
    from mkt_tag import camera_raw, images

    raw = camera_raw.CAMERA_RAW_EXTENSIONS
    monkeypatch.setattr(images, "IMAGE_EXTENSIONS", images.IMAGE_EXTENSIONS - raw)
    monkeypatch.setattr(images, "UNREADABLE_EXTENSIONS", images.UNREADABLE_EXTENSIONS | raw)
    for name in ("x.jxl", "y.JXL", "z.cr2", "w.nef"):
        (photos / name).write_bytes(b"not read")
    result = tag(photos, "--labels", label_file, "-o", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert "skipped 2 .jxl, 1 .cr2, 1 .nef files mkt-tag cannot read yet" in result.stderr
    assert "to read camera raw files: pip install 'mkt-tag[raw]'" in result.stderr
    assert str(photos / "x.jxl") not in result.stderr
    verbose = tag(photos, "--labels", label_file, "-o", tmp_path / "r.csv", "--verbose")
    assert verbose.exit_code == 0, verbose.output
    for name in ("x.jxl", "y.JXL", "z.cr2", "w.nef"):
        assert any(str(photos / name) in line for line in verbose.stderr.splitlines()), name
    quiet = tag(photos, "--labels", label_file, "-o", tmp_path / "r.csv", "-q")
    assert "cannot read yet" in quiet.stderr  # never silent, even with -q


# --- item 12: slow failures and needless model loads --------------------------------


def test_missing_input_alone_fails_at_once(tmp_path: Path, label_file):
    """Fault (issue item 12): a nonexistent path cost a model load, then exit 3. It is now
    one line and exit 1, before any work."""
    for given in ([tmp_path / "nope"], [tmp_path / "nope", tmp_path / "gone.jpg"]):
        result = tag(*given, "--labels", label_file, model=UNCACHED_MODEL)
        assert result.exit_code == EXIT_ERROR, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert all(str(path) in result.stderr for path in given)
        assert "not found" in result.stderr


def test_nothing_to_do_does_not_load_the_model(
    tmp_path: Path, photos: Path, label_file, monkeypatch: pytest.MonkeyPatch
):
    """Fault (issue item 12): a run where every image was already done still loaded the
    model. It now finishes without loading it (here: loading would fail)."""
    out = tmp_path / "r.csv"
    assert tag(photos, "--labels", label_file, "-o", out, "--sidecar", "json").exit_code == 0
    before = out.read_bytes()
    from mkt_tag.tagging.tagger import Tagger

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Tagger, "load", no_load)
    result = tag(photos, "--labels", label_file, "-o", out, "--sidecar", "json")
    assert result.exit_code == 0, result.output
    assert "5 images (0 new, 0 stale, 5 current): tagged 0, skipped 5 current" in result.stderr
    assert out.read_bytes() == before


def test_tags_of_another_model_are_stale_not_done(tmp_path: Path, photos: Path, label_file):
    """Fault (issue 14): after switching the model, a re-run kept the old tags and said
    "skipped N already done". The images are now stale: this model must tag them, and a
    model that cannot be had is one clear error, not a silent skip."""
    out = tmp_path / "r.csv"
    assert tag(photos, "--labels", label_file, "-o", out, "--sidecar", "json").exit_code == 0
    before = out.read_bytes()
    result = tag(
        photos, "--labels", label_file, "-o", out, "--sidecar", "json", model=UNCACHED_MODEL
    )
    assert result.exit_code == EXIT_ERROR, result.output
    assert "ViT-B-32" in result.stderr and "Traceback" not in result.output
    assert out.read_bytes() == before


def test_some_missing_inputs_are_reported_and_the_rest_tagged(tmp_path: Path, photos, label_file):
    """Item 12, the other half: missing paths among others are listed, the rest is tagged,
    exit 3."""
    out = tmp_path / "r.csv"
    result = tag(photos, tmp_path / "nope", "--labels", label_file, "-o", out)
    assert result.exit_code == EXIT_PARTIAL
    assert any("nope" in line and "not found" in line for line in result.stderr.splitlines())
    assert len(rows(out)) == 5


def test_non_finite_scores_are_failures_not_empty_tags(tmp_path, monkeypatch):
    """Fault: a model whose scores for an image are NaN (an fp16 overflow; NaN weights are
    refused at load) wrote an empty tag list with exit 0, and later runs skipped the image as
    done. Now the image fails with one line, exit 3, no row, no cached features."""
    from mkt_tag.model import MKT

    folder = tmp_path / "photos"
    for i in range(3):
        make_photo(folder / f"p{i}.jpg", seed=i)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nsea\n")
    encode = MKT.encode_images

    def broken_for_the_second(self, images):
        features = encode(self, images)
        if len(images) > 1:
            features.global_[1] = float("nan")
        return features

    monkeypatch.setattr(MKT, "encode_images", broken_for_the_second)
    out = tmp_path / "out.csv"
    args = ["tag", str(folder), "--labels", str(labels), "-m", str(TINY_CONFIG)]
    result = CliRunner().invoke(
        app, [*args, "-o", str(out), "--batch-size", "3", "--parallel", "1", "--feature-cache"]
    )
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "p1.jpg" in result.stderr and "not numbers" in result.stderr
    rows = {Path(row["path"]).name for row in csv.DictReader(out.open())}
    assert rows == {"p0.jpg", "p2.jpg"}
    assert all(row["tags"] for row in csv.DictReader(out.open()))
    monkeypatch.setattr(MKT, "encode_images", encode)
    again = CliRunner().invoke(app, [*args, "-o", str(out), "--feature-cache"])
    assert again.exit_code == 0 and "tagged 1" in again.stderr  # p1 was not done


@pytest.mark.parametrize("where", ["out", "calibrate", "save-scores"])
def test_eval_outputs_that_cannot_be_written_fail_before_scoring(tmp_path, where):
    """Fault: `mkt-tag eval --out FILE` (or --calibrate / --save-scores in a folder that cannot
    be made) failed only after every image was scored, and without printing the table it had.
    Now it fails at once, before the model loads (a model id missing from the cache proves it:
    loading it would be another error), with one line naming the path."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    photo = make_photo(tmp_path / "img" / "0.jpg")
    data = tmp_path / "test.csv"
    data.write_text(f"path,labels\n{photo},cat\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    target = {"out": blocker, "calibrate": blocker / "t.tsv", "save-scores": blocker / "s.npz"}
    args = ["eval", "--data", str(data), "--labels", str(labels), "-m", "ViT-B-32:openai"]
    result = CliRunner().invoke(app, [*args, f"--{where}", str(target[where])])
    assert result.exit_code == EXIT_ERROR
    assert str(target[where]) in result.stderr and "cannot write" in result.stderr
    assert "not in the cache" not in result.stderr  # the model was never loaded
    assert len(result.stderr.strip().splitlines()) == 1


# --- issue 14: a library other programs write to ------------------------------------------


def test_a_sidecar_of_another_program_is_not_done_and_keeps_its_keywords(
    tmp_path: Path, label_file
):
    """Fault (issue 14): a darktable sidecar counted as done (`tagged 0, skipped 1`, exit 0),
    `--overwrite` deleted the person's keywords, and only dc:subject was written, which
    Immich does not read. Uses only the command line and exiftool, so it runs on any
    version."""
    import json
    import shutil
    import subprocess

    photos = tmp_path / "photos"
    make_photo(photos / "a.jpg")
    sidecar = photos / "a.jpg.xmp"
    shutil.copy(Path(__file__).parents[1] / "data" / "library" / "darktable.jpg.xmp", sidecar)
    first = tag(photos, "--labels", label_file, "--sidecar", "xmp", "-k", "2")
    assert first.exit_code == 0, first.output
    assert "tagged 1" in first.stderr
    again = tag(photos, "--labels", label_file, "--sidecar", "xmp", "-k", "2", "--overwrite")
    assert again.exit_code == 0, again.output
    fields = ["-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-XMP-digiKam:TagsList"]
    read = subprocess.run(
        ["exiftool", "-j", "-G1", *fields, str(sidecar)], check=True, capture_output=True
    )
    found = json.loads(read.stdout)[0]
    assert "holiday" in found["XMP-dc:Subject"]  # the person's, kept
    assert "places|France|Paris" in found["XMP-lr:HierarchicalSubject"]
    assert "places/France/Paris" in found["XMP-digiKam:TagsList"]  # what Immich reads first
    assert len(found["XMP-digiKam:TagsList"]) > 3  # and mkt-tag's tags with them
