"""The paper's model one command away: download, checks, import, cache (no network).

gdown is replaced by a fake Drive that serves reference-format files of a tiny CLIP (random
weights, `tests/test_paper_checkpoints.py`'s layout), label lists, Drive's quota page and
web pages in place of files; the model's registry entry points at that tiny backbone and
asks for 5 seen and 3 unseen labels instead of 925 and 81.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import torch
from gdown.download import GoogleDriveFileToDownload
from gdown.exceptions import FileURLRetrievalError
from safetensors.torch import load_file
from typer.testing import CliRunner

from mkt_tag import hub, published
from mkt_tag import paper_checkpoints as reference
from mkt_tag.cli import app
from mkt_tag.drive import DownloadError
from mkt_tag.errors import EXIT_ERROR, EXIT_USAGE, CheckpointError, ModelNotCachedError
from tests.conftest import make_photo
from tests.test_paper_checkpoints import (
    ARCH,
    openai_clip_state,
    save,
    stage1_state,
    stage2_state,
    write_backbone,
)

runner = CliRunner()
NAME = "mkt-nus-wide"
SEEN = ["dog", "beach", "sunset", "traffic light", "cat"]
UNSEEN = ["zebra", "glacier", "protest"]
QUOTA = (
    "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file "
    "recently. Please try accessing the file again later.\n\nYou may still be able to access "
    "the file from the browser:\n\n\thttps://drive.google.com/uc?id=X\n\nbut Gdown can't."
)
QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    b"<p class='uc-error-subcaption'>Too many users have viewed or downloaded this file "
    b"recently.</p></body></html>"
)


class FakeDrive:
    """gdown's ``download`` and ``download_folder`` over files held in memory.

    ``answers[file id]`` is the file's bytes, or an exception to raise (once, if it is in
    ``once``). Like gdown, a download writes its output only when complete, and with
    ``resume`` an output already there is returned as it is.
    """

    def __init__(self, answers: dict[str, bytes | Exception], folder: dict[str, str]) -> None:
        self.answers = answers
        self.folder = folder
        self.once: set[str] = set()
        self.calls: Counter[str] = Counter()

    def download(self, id: str, output: str, quiet: bool = False, resume: bool = False) -> str:
        if resume and Path(output).exists():
            return output
        self.calls[id] += 1
        answer = self.answers[id]
        if isinstance(answer, Exception):
            if id in self.once:
                self.answers[id] = self.saved[id]
            raise answer
        Path(output).write_bytes(answer)
        return output

    def download_folder(self, id: str, quiet: bool = False, skip_download: bool = False):
        assert skip_download, "only listed, never downloaded whole"
        self.calls["folder"] += 1
        return [GoogleDriveFileToDownload(i, name, name) for name, i in self.folder.items()]

    def fail_once(self, file_id: str, error: Exception) -> None:
        self.saved = {file_id: self.answers[file_id]}
        self.answers[file_id] = error
        self.once.add(file_id)


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("published")
    clip_state = openai_clip_state()
    backbone = write_backbone(root / "backbone", clip_state, ARCH)
    stage1 = save(stage1_state(clip_state), root / "stage1.pth")
    stage2 = save(stage2_state(clip_state), root / "stage2.pth")
    return SimpleNamespace(root=root, backbone=backbone, stage1=stage1, stage2=stage2)


@pytest.fixture
def drive(reference_files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDrive:
    import gdown

    model = published.PUBLISHED[NAME]
    monkeypatch.setitem(
        published.PUBLISHED,
        NAME,
        dataclasses.replace(
            model,
            backbone=reference_files.backbone,
            seen=("Concepts925.txt", len(SEEN)),
            unseen=("Concepts81.txt", len(UNSEEN)),
        ),
    )
    monkeypatch.setattr(hub, "offline", lambda: False)
    fake = FakeDrive(
        {
            model.stage1.id: reference_files.stage1.read_bytes(),
            model.stage2.id: reference_files.stage2.read_bytes(),
            "seen-id": "".join(f"{label}\n" for label in SEEN).encode(),
            "unseen-id": "".join(f"{label}\r\n" for label in UNSEEN).encode(),  # as on Windows
        },
        {"Concepts925.txt": "seen-id", "Concepts81.txt": "unseen-id", "img_names.pkl": "x"},
    )
    monkeypatch.setattr(gdown, "download", fake.download)
    monkeypatch.setattr(gdown, "download_folder", fake.download_folder)
    return fake


def _download(cache: Path):
    return runner.invoke(app, ["models", "download", NAME, "--cache-dir", str(cache)])


def _one_line_error(result) -> str:
    assert result.exit_code == EXIT_ERROR, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_download_imports_the_model_with_its_labels(drive, reference_files, tmp_path):
    cache = tmp_path / "cache"
    result = _download(cache)
    assert result.exit_code == 0, result.output
    folder = published.folder(NAME, cache)
    assert (folder / "labels.txt").read_text().splitlines() == SEEN + UNSEEN  # paper's order
    assert published.seen_labels(folder) == SEEN
    assert not (cache / "downloads" / NAME).exists()  # raw downloads deleted
    assert drive.calls["folder"] == 1 and drive.calls["x"] == 0  # one listing, two lists
    # What `import-reference` makes of the same files, byte for byte.
    direct = reference.import_reference(
        reference_files.stage1,
        tmp_path / "direct",
        reference_files.stage2,
        backbone=reference_files.backbone,
        cache_dir=cache,
    )
    assert (folder / "mkt_config.json").read_bytes() == (
        direct.folder / "mkt_config.json"
    ).read_bytes()
    ours, theirs = (load_file(str(path / "model.safetensors")) for path in (folder, direct.folder))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    # Listed as cached, with its size; downloading again does nothing.
    listing = runner.invoke(app, ["models", "--cache-dir", str(cache)], terminal_width=200)
    row = next(line for line in listing.output.splitlines() if NAME in line)
    assert " yes " in row and " MB " in row
    calls = sum(drive.calls.values())
    assert _download(cache).exit_code == 0 and sum(drive.calls.values()) == calls


def test_first_use_of_the_name_installs_it_and_tags(drive, tmp_path, label_file):
    cache = tmp_path / "cache"
    photo = make_photo(tmp_path / "photo.jpg")
    command = ["tag", str(photo), "-l", str(label_file), "--model", NAME, "--cache-dir", str(cache)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert str(photo) in result.output
    assert published.is_installed(NAME, cache)


def test_drives_quota_refusal_is_one_line_with_the_manual_route(drive, tmp_path):
    drive.answers[published.PUBLISHED[NAME].stage1.id] = FileURLRetrievalError(QUOTA)
    line = _one_line_error(_download(tmp_path / "cache"))
    assert "quota" in line and "try again" in line and "import-reference" in line
    assert not published.folder(NAME, tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("page", "said"),
    [
        (QUOTA_PAGE, "quota"),
        (b"\n  <html><body>Sign in - Google Accounts</body></html>", "web page instead"),
    ],
)
def test_a_web_page_in_place_of_the_file_is_named_and_never_kept(drive, tmp_path, page, said):
    drive.answers[published.PUBLISHED[NAME].stage2.id] = page
    cache = tmp_path / "cache"
    line = _one_line_error(_download(cache))
    assert said in line and "import-reference" in line
    raw = cache / "downloads" / NAME
    assert sorted(path.name for path in raw.iterdir()) == ["stage1.pth"]  # checked, kept
    assert not published.folder(NAME, cache).exists()


def test_an_interrupted_download_resumes_and_partial_files_are_never_read(drive, tmp_path):
    model = published.PUBLISHED[NAME]
    drive.fail_once(model.stage2.id, requests.ConnectionError("Connection reset by peer"))
    cache = tmp_path / "cache"
    line = _one_line_error(_download(cache))
    assert "cannot download" in line and "Connection reset by peer" in line
    # A file left by a download that died after gdown finished it is checked first.
    raw = cache / "downloads" / NAME
    (raw / "stage2.pth.download").write_bytes(b"PK\x03\x04 truncated")
    result = _download(cache)
    assert result.exit_code == EXIT_ERROR and "do not fit" in result.output
    assert not (raw / "stage2.pth").exists()  # a file that failed the import is fetched anew
    result = _download(cache)
    assert result.exit_code == 0, result.output
    assert drive.calls[model.stage1.id] == 2 and drive.calls[model.stage2.id] == 2


def test_files_whose_tensors_do_not_fit_are_refused(drive, reference_files, tmp_path):
    clip_state = openai_clip_state()
    wrong = stage1_state(clip_state)
    wrong["ln_post.weight"] = wrong["ln_post.weight"][:-1]  # one channel short
    path = save(wrong, tmp_path / "wrong.pth")
    drive.answers[published.PUBLISHED[NAME].stage1.id] = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"do not fit.*ln_post\.weight"):
        published.install(NAME, tmp_path / "cache")
    assert not published.folder(NAME, tmp_path / "cache").exists()
    assert not list(published.folder(NAME, tmp_path / "cache").parent.glob(".*importing"))


def test_label_lists_are_checked(drive, tmp_path):
    drive.answers["seen-id"] = b"dog\ndog\nbeach\nsunset\ncat\n"
    with pytest.raises(DownloadError, match=r"Concepts925\.txt: 5 labels \(4 distinct\) where"):
        published.install(NAME, tmp_path / "cache")
    del drive.folder["Concepts81.txt"]
    drive.answers["seen-id"] = "".join(f"{label}\n" for label in SEEN).encode()
    with pytest.raises(DownloadError, match=r"Concepts81\.txt: not in .* lists Concepts925\.txt"):
        published.install(NAME, tmp_path / "cache")


def test_offline_it_says_how_to_get_the_model(drive, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "offline", lambda: True)
    with pytest.raises(ModelNotCachedError, match="models download mkt-nus-wide"):
        published.install(NAME, tmp_path / "cache")
    assert sum(drive.calls.values()) == 0


def test_tag_without_labels_uses_the_bundled_ones(drive, tmp_path, label_file, tiny_id):
    cache = tmp_path / "cache"
    photo = make_photo(tmp_path / "photo.jpg")
    tag = ["tag", str(photo), "--model", NAME, "--cache-dir", str(cache), "-k", "8"]
    result = runner.invoke(app, tag)
    assert result.exit_code == 0, result.output
    tags = result.stdout.split("\t")[1]
    assert sorted(tag.split(" (")[0] for tag in tags.split(", ")) == sorted(SEEN + UNSEEN)
    result = runner.invoke(app, [*tag, "-l", str(label_file)])  # the user's file replaces them
    assert (
        result.exit_code == 0 and "zebra" not in result.stdout and "traffic light" in result.stdout
    )
    plain = runner.invoke(app, ["tag", str(photo), "--model", tiny_id])
    assert plain.exit_code == EXIT_USAGE and "--labels: needed with --model" in plain.output


def test_eval_splits_a_users_labels_into_seen_and_unseen(drive, tmp_path):
    from tests.cli.test_eval import row_names, write_dataset

    data = write_dataset(tmp_path)  # cat, dog, beach, sunset: trained on; snow: not
    cache = tmp_path / "cache"
    command = ["eval", "--data", str(data), "--labels", str(tmp_path / "labels.txt")]
    result = runner.invoke(app, [*command, "--model", NAME, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "trained on 5 labels" in result.stderr and "4 of the 5 labels" in result.stderr
    assert row_names(result.stdout) == ["ZSL", "GZSL", "seen"]
    unseen = tmp_path / "u.txt"
    unseen.write_text("dog\nsnow\n")
    result = runner.invoke(
        app, [*command, "--model", NAME, "--cache-dir", str(cache), "--unseen", str(unseen)]
    )
    assert result.exit_code == 0 and "trained on" not in result.stderr  # --unseen overrides
