"""The command line through Typer's CliRunner: exit codes, output files, every error path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()


def tag(*args: str | Path):
    return runner.invoke(app, ["tag", *map(str, args), "--model", str(TINY_CONFIG)])


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "mkt-tag 0." in result.stdout
    result = runner.invoke(app, ["tag", "--help"])
    assert result.exit_code == 0 and "--labels" in result.stdout and "Example" in result.stdout


def test_tag_prints_to_stdout(photos, label_file):
    result = tag(photos / "a.jpg", photos / "b.png", "--labels", label_file, "--top-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(photos / "a.jpg"), str(photos / "b.png")]
    assert all(line.count("(") == 2 for line in lines)
    assert "2 images: tagged 2" in result.stderr


def test_csv_json_jsonl_outputs_agree(photos, label_file, tmp_path):
    outputs = {}
    for ext in ("csv", "json", "jsonl"):
        out = tmp_path / f"results.{ext}"
        result = tag(photos, "--labels", label_file, "-o", out, "--top-k", "3")
        assert result.exit_code == 0, result.output
        outputs[ext] = out
    rows = list(csv.DictReader(outputs["csv"].open(encoding="utf-8")))
    records = json.loads(outputs["json"].read_text())
    lines = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    assert len(rows) == len(records) == len(lines) == 5  # not recursive: sub/ is left out
    for row, record, line in zip(rows, records, lines, strict=True):
        assert row["path"] == record["path"] == line["path"]
        assert row["tags"].split("|") == [t["label"] for t in record["tags"]]
        assert record == line
        assert len(record["tags"]) == 3
        scores = [t["score"] for t in record["tags"]]
        assert scores == sorted(scores, reverse=True)


def test_recursive(photos, label_file, tmp_path):
    out = tmp_path / "r.jsonl"
    assert tag(photos, "-r", "--labels", label_file, "-o", out).exit_code == 0
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert str(photos / "sub" / "f.jpg") in paths and len(paths) == 6


def test_threshold_and_top_k(photos, label_file, tmp_path):
    out = tmp_path / "all.json"
    tag(photos, "--labels", label_file, "-o", out, "--top-k", "5")
    everything = json.loads(out.read_text())
    # Files hold scores rounded to 4 decimals and the threshold applies to the exact score, so
    # the cut lies halfway between two written scores: no exact score can sit on either side of
    # it with its rounded one on the other.
    written = sorted({t["score"] for r in everything for t in r["tags"]})
    middle = len(written) // 2
    cut = (written[middle - 1] + written[middle]) / 2
    out2 = tmp_path / "cut.json"
    assert tag(photos, "--labels", label_file, "-o", out2, "--threshold", str(cut)).exit_code == 0
    for full, kept in zip(everything, json.loads(out2.read_text()), strict=True):
        assert [t for t in full["tags"] if t["score"] >= cut] == kept["tags"]
    out3 = tmp_path / "both.json"
    tag(photos, "--labels", label_file, "-o", out3, "--threshold", str(cut), "--top-k", "1")
    for full, kept in zip(everything, json.loads(out3.read_text()), strict=True):
        assert kept["tags"] == [t for t in full["tags"] if t["score"] >= cut][:1]


def test_per_label_thresholds(photos, label_file, tmp_path):
    thresholds = tmp_path / "t.tsv"
    thresholds.write_text("cat\t-100\ndog\t100\nunknown label\t0\n")
    out = tmp_path / "t.json"
    result = tag(
        photos, "--labels", label_file, "-o", out, "--thresholds", thresholds, "--threshold", "100"
    )
    assert result.exit_code == 0, result.output
    assert "not in" in result.stderr  # the unknown label is reported
    for record in json.loads(out.read_text()):
        assert [t["label"] for t in record["tags"]] == ["cat"]


@pytest.mark.parametrize("fmt", ["json", "txt", "xmp"])
def test_sidecars_and_skip_existing(photos, label_file, fmt):
    result = tag(photos, "--labels", label_file, "--sidecar", fmt, "--top-k", "2")
    assert result.exit_code == 0, result.output
    sidecar = photos / f"a.jpg.{fmt}"
    assert sidecar.is_file()
    before = sidecar.read_bytes()
    again = tag(photos, "--labels", label_file, "--sidecar", fmt, "--top-k", "2")
    assert "5 images (0 new, 0 stale, 5 current): tagged 0, skipped 5 current" in again.stderr
    assert sidecar.read_bytes() == before
    over = tag(photos, "--labels", label_file, "--sidecar", fmt, "--top-k", "2", "--overwrite")
    assert "tagged 5" in over.stderr
    if fmt == "txt":  # no record: a txt sidecar that exists is taken as current
        return
    changed = tag(photos, "--labels", label_file, "--sidecar", fmt, "--top-k", "4")
    assert "5 images (0 new, 5 stale, 0 current): tagged 5, skipped 0" in changed.stderr
    assert sidecar.read_bytes() != before


def test_stem_naming_and_append(photos, label_file):
    (photos / "a.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmp:Rating="4"><dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    result = tag(
        photos / "a.jpg",
        "--labels",
        label_file,
        "--sidecar",
        "xmp",
        "--sidecar-naming",
        "stem",
        "--append",
        "--top-k",
        "2",
    )
    assert result.exit_code == 0, result.output
    from mkt_tag.sidecars import read_sidecar_tags

    keywords = read_sidecar_tags(photos / "a.xmp", "xmp")
    assert keywords[0] == "holiday" and len(keywords) == 3
    assert 'Rating="4"' in (photos / "a.xmp").read_text()


def test_bad_images_are_listed_and_the_run_continues(photos, label_file, tmp_path):
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    full = photos / "cut.jpg"
    make_photo(full, size=(256, 256))
    full.write_bytes(full.read_bytes()[:400])
    out = tmp_path / "r.csv"
    result = tag(photos, photos / "missing.jpg", "--labels", label_file, "-o", out)
    assert result.exit_code == EXIT_PARTIAL
    for name, reason in [
        ("empty.jpg", "empty"),
        ("text.png", "not an image"),
        ("cut.jpg", "truncated"),
        ("missing.jpg", "not found"),
    ]:
        assert any(name in line and reason in line for line in result.stderr.splitlines()), name
    assert "failed 4" in result.stderr
    assert len(list(csv.DictReader(out.open()))) == 5
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sidecar", "yaml"], "'yaml' is not one of"),
        (["--sidecar-naming", "odd", "--sidecar", "txt"], "'odd' is not one of"),
        (["-o", "results.xlsx"], ".csv, .json or .jsonl"),
        (["--overwrite", "--append"], "choose one of"),
        (["--device", "tpu"], "'tpu' is not one of"),
        (["--precision", "fp8"], "'fp8' is not one of"),
        (["--top-k", "0"], "greater than or equal to 1"),
    ],
)
def test_usage_errors(photos, label_file, args, message):
    result = tag(photos, "--labels", label_file, *args)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_usage_error_codes(photos, label_file):
    assert tag(photos, "--labels", label_file, "--sidecar", "yaml").exit_code == EXIT_USAGE
    assert tag(photos).exit_code == EXIT_USAGE  # --labels missing
    assert tag(photos, "--labels", label_file, "--device", "tpu").exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no labels"),
        ("# nothing\n", "no labels"),
        (b"\xff\xfe", "not UTF-8"),
        ("word " * 80, "too long for the text context"),
    ],
)
def test_bad_label_files(photos, tmp_path, content, message):
    labels = tmp_path / "l.txt"
    labels.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = tag(photos, "--labels", labels)
    assert result.exit_code == EXIT_ERROR
    assert message in result.stderr and str(labels) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_label_file_and_duplicates(photos, tmp_path):
    result = tag(photos, "--labels", tmp_path / "nope.txt")
    assert result.exit_code == EXIT_ERROR and "file not found" in result.stderr
    labels = tmp_path / "dup.txt"
    labels.write_text("cat\nCat\ndog\n")
    result = tag(photos / "a.jpg", "--labels", labels)
    assert result.exit_code == 0 and "duplicate label" in result.stderr


def test_missing_model_is_one_line_with_the_fix(photos, label_file, isolated_cache):
    result = runner.invoke(
        app, ["tag", str(photos), "--labels", str(label_file), "--model", "ViT-B-32:openai"]
    )
    assert result.exit_code == EXIT_ERROR
    assert "mkt-tag models download ViT-B-32:openai" in result.stderr
    assert str(isolated_cache) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_model(photos, label_file):
    result = runner.invoke(app, ["tag", str(photos), "--labels", str(label_file), "-m", "Nope:x"])
    assert result.exit_code == EXIT_ERROR and "unknown model" in result.stderr


def test_models_list_and_download(isolated_cache, tmp_path):
    from tests.test_hub import seed_hub_cache

    seed_hub_cache(
        isolated_cache,
        "timm/vit_base_patch16_clip_224.openai",
        {"open_clip_model.safetensors": b"x"},
    )
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    line = next(li for li in result.stdout.splitlines() if "ViT-B-16:openai" in li)
    assert " yes " in line
    assert " no " in next(li for li in result.stdout.splitlines() if "ViT-L-14:openai" in li)
    ok = runner.invoke(app, ["models", "download", "ViT-B-16:openai"])
    assert ok.exit_code == 0 and "open_clip_model.safetensors" in ok.stdout
    bad = runner.invoke(app, ["models", "download", "ViT-B-32:openai"])
    assert bad.exit_code == EXIT_ERROR and "not in the cache" in bad.stderr
    mixed = runner.invoke(app, ["models", "download", "ViT-B-16:openai", "ViT-B-32:openai"])
    assert mixed.exit_code == EXIT_PARTIAL


def test_checkpoint_folder_as_model(photos, label_file, tmp_path):
    from mkt_tag import checkpoints

    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "ckpt")
    a = runner.invoke(
        app, ["tag", str(photos), "--labels", str(label_file), "-m", str(tmp_path / "ckpt")]
    )
    b = tag(photos, "--labels", label_file)
    assert a.exit_code == 0 and a.stdout == b.stdout


def test_python_api_matches_cli(photos, label_file):
    from mkt_tag import Tagger

    tagger = Tagger.load(str(TINY_CONFIG), precision="fp32")
    results = tagger.tag(
        [photos / "a.jpg"], ["cat", "dog", "beach", "sunset", "traffic light"], top_k=2
    )
    cli = tag(photos / "a.jpg", "--labels", label_file, "--top-k", "2", "--precision", "fp32")
    expected = ", ".join(f"{t.label} ({t.score:.3f})" for t in results[0].tags)
    assert cli.stdout.strip().split("\t")[1] == expected
    from PIL import Image

    with Image.open(photos / "a.jpg") as image:
        from_pil = tagger.tag([image], ["cat", "dog", "beach", "sunset", "traffic light"], top_k=2)
    assert from_pil[0].tags == results[0].tags


def test_a_malformed_results_file_is_never_dropped(photos, label_file, tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("not,a,results file\n")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces rows, it does not drop a file
        result = tag(photos, "--labels", label_file, "-o", out, *extra)
        assert result.exit_code == EXIT_ERROR
        assert str(out) in result.stderr and "fix it, or delete it" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_text() == "not,a,results file\n"


def test_ctrl_c_before_tagging_is_exit_130_without_a_traceback(photos, label_file, monkeypatch):
    from mkt_tag.tagging import job

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. while waiting for another run's results file

    monkeypatch.setattr(job, "plan", interrupted)
    result = tag(photos, "--labels", label_file, "-o", photos / "r.csv")
    assert result.exit_code == EXIT_INTERRUPTED
    assert "run the same command again" in result.stderr
    assert "Traceback" not in result.output


def test_a_folder_with_heic_photos_is_tagged(photos, label_file, tmp_path):
    make_photo(tmp_path / "phone.png", seed=5)
    with Image.open(tmp_path / "phone.png") as image:
        pillow_heif.from_pillow(image).save(photos / "phone.heic")
    out = tmp_path / "r.json"
    result = tag(photos, "--labels", label_file, "-o", out, "--top-k", "2", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    records = {record["path"]: record for record in json.loads(out.read_text())}
    assert len(records[str(photos / "phone.heic")]["tags"]) == 2
    assert "6 images: tagged 6" in result.stderr and "cannot read" not in result.stderr


def test_verbose_lists_what_it_skipped_and_removed(photos, label_file, tmp_path):
    (photos / "x.jxl").write_bytes(b"x")
    stale = photos / ".a.jpg.json.999999999.0123abcd.tmp"
    stale.write_bytes(b"")
    result = tag(photos, "--labels", label_file, "--sidecar", "json", "--verbose")
    assert result.exit_code == 0, result.output
    assert f"cannot read .jxl files yet: {photos / 'x.jxl'}" in result.stderr
    assert f"removed a temporary file left by a killed run: {stale}" in result.stderr
    assert "removed 1 temporary files left by killed runs" in result.stderr
    assert not stale.exists()


def test_stale_images_are_rescored_from_cached_features(
    photos, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 14, item 2: after a vocabulary edit the images are stale; with --feature-cache
    only the scoring runs again (here the image tower would fail if it were called)."""
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    first = tag(photos, "--labels", labels, "--sidecar", "xmp", "--feature-cache")
    assert first.exit_code == 0, first.output
    labels.write_text("cat\ndog\nanimal/bird\n")
    from mkt_tag.model import MKT

    def no_image_tower(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image tower ran")

    monkeypatch.setattr(MKT, "encode_images", no_image_tower)
    again = tag(photos, "--labels", labels, "--sidecar", "xmp", "--feature-cache", "-k", "3")
    assert again.exit_code == 0, again.output
    assert "5 images (0 new, 5 stale, 0 current): tagged 5" in again.stderr
    from mkt_tag.sidecars import read_sidecar_tags

    assert {"bird", "animal"} <= set(read_sidecar_tags(photos / "a.jpg.xmp", "xmp"))


def test_tag_root_and_hierarchical_labels_reach_every_field(photos, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("animal/dog\nanimal/cat\n")
    result = tag(photos / "a.jpg", "--labels", labels, "--sidecar", "xmp", "--tag-root", "auto")
    assert result.exit_code == 0, result.output
    text = (photos / "a.jpg.xmp").read_text()
    for entry in ("auto|animal|dog", "auto/animal/cat", "<rdf:li>animal</rdf:li>"):
        assert entry in text
    assert "<rdf:li>auto</rdf:li>" not in text  # the root is no flat keyword
    again = tag(photos / "a.jpg", "--labels", labels, "--sidecar", "xmp")  # no root now
    assert "(0 new, 1 stale, 0 current)" in again.stderr
    text = (photos / "a.jpg.xmp").read_text()
    assert "auto|" not in text and "animal|dog" in text
