"""`mkt-tag train` end to end on the tiny backbone: both stages, resume, DDP, config, errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_USAGE
from mkt_tag.train.resume import METRIC_COLUMNS
from tests.conftest import TINY_CONFIG

runner = CliRunner()
COLOURS = {"red": (230, 20, 20), "green": (20, 210, 30), "blue": (20, 30, 230)}
FAST = ["--model", str(TINY_CONFIG), "--workers", "0", "--device", "cpu"]


def colour_photo(path: Path, colour: str, seed: int, size: int = 16) -> Path:
    """A small image of one colour with some noise: the label is learnable from the pixels."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(COLOURS[colour], 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_set(root: Path, name: str, n: int, offset: int = 0) -> Path:
    """``n`` colour images and a CSV naming each one's colour (and, every 3rd, 'shape')."""
    rows = ["path,labels"]
    for i in range(offset, offset + n):
        colour = list(COLOURS)[i % 3]
        colour_photo(root / "img" / f"{i}.png", colour, seed=i)
        rows.append(f"img/{i}.png,{colour}{'|shape' if i % 3 == 0 else ''}")
    path = root / f"{name}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's many small operations run fastest on one thread, and a second thread
    that another process keeps busy makes each of them wait (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 training images, 6 validation images, 3 labels (the 'shape' tag is not one)."""
    root = tmp_path_factory.mktemp("colours")
    labels = root / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    return {
        "train": make_set(root, "train", 12),
        "val": make_set(root, "val", 6, offset=100),
        "labels": labels,
        "root": root,
    }


def train(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, ["train", *map(str, args)], env=env)


def base_args(dataset: dict[str, Path], out: Path, **replace: object) -> list[object]:
    """Flags for a small run; ``replace`` swaps option values (data=..., model=..., ...)."""
    args: list[object] = [
        *("--data", dataset["train"], "--val", dataset["val"], "--labels", dataset["labels"]),
        *("--out", out, "--batch-size", 4, "--prompt-batch-size", 4, *FAST),
    ]
    for name, value in replace.items():
        args[args.index(f"--{name.replace('_', '-')}") + 1] = value
    return args


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def metric_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- end to end ---------------------------------------------------------------------------


def test_both_stages_then_tag_with_best(dataset, tmp_path, tiny_id):
    run = tmp_path / "run"
    args = base_args(dataset, run, model=tiny_id)  # a backbone with weights: delta checkpoints
    args += ["--epochs", 1, "--prompt-epochs", 1, "--warmup-epochs", 0, "--trainable-blocks", 1]
    result = train(*args)
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "'shape'" in result.stderr  # not in the vocabulary
    assert "training on 12 images, validating on 6, 3 labels" in result.stderr
    assert f"best: {run / 'best'}" in result.stdout
    assert f"--model {run / 'best'}" in result.stdout
    assert sorted(p.name for p in run.iterdir()) == [
        "best",
        "features",
        "last",
        "metrics.csv",
        "state",
        "train_config.json",
    ]
    rows = metric_rows(run)
    assert list(rows[0]) == METRIC_COLUMNS
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("2", "1")]
    assert rows[0]["distill_loss"] != "" and rows[1]["distill_loss"] == ""
    assert all(0 <= float(r["val_map"]) <= 1 and float(r["loss"]) > 0 for r in rows)
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 4 and saved["model"] == tiny_id
    assert saved["data"] == str(dataset["train"]) and Path(saved["labels"]).is_absolute()
    state = json.loads((run / "state" / "state.json").read_text())
    assert state["done"] == [1, 2] and state["best"].startswith("stage ")
    assert sorted(p.name for p in (run / "features").iterdir()) == [
        "train.json",
        "train_global.npy",
        "train_patches.npy",
        "val.json",
        "val_global.npy",
        "val_patches.npy",
    ]
    assert np.load(run / "features" / "train_patches.npy").shape == (12, 16, 32)
    for name in ("best", "last"):
        config = json.loads((run / name / "mkt_config.json").read_text())
        assert config["weights"] == "delta" and config["backbone"] == tiny_id
        assert config["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the backbone's, recorded
    last = tensors(run / "last")
    assert "prompt.prefix" in last and "clip.visual.proj" in last
    assert any(".resblocks.1." in name for name in last)
    assert not any(".resblocks.0." in name or "token_embedding" in name for name in last)
    assert json.loads((run / "last" / "mkt_config.json").read_text())["prompt_context"] is True

    photos, labels = dataset["root"] / "img", dataset["labels"]
    command = ["tag", photos, "--labels", labels, "--model", run / "best", "--top-k", 1]
    tagged = runner.invoke(app, [*map(str, command), "--device", "cpu"])
    assert tagged.exit_code == 0, tagged.output
    assert len(tagged.stdout.strip().splitlines()) == 18


def test_warnings_before_training_are_printed_in_order(dataset, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nred\nblue\n")
    val = tmp_path / "val.csv"  # no validation image with a positive label
    val.write_text(f"path,labels\n{dataset['root'] / 'img' / '100.png'},shape\n")
    run = tmp_path / "run"
    args = base_args(dataset, run, labels=labels, val=val)
    result = train(*args, "--stage", 1, "--epochs", 1, "--max-steps", 1)  # default warm-up
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: {labels}:3: duplicate label 'red' (same as 'red' on line 1), ignored",
        f"warning: {dataset['train']}: 1 labels not in the vocabulary (ignored), e.g. 'shape'",
        f"warning: {val}: 1 labels not in the vocabulary (ignored), e.g. 'shape'",
        "warning: no validation image has a positive label: best/ will be the last epoch",
    ]
    assert f"training on 12 images, validating on 1, 3 labels; run folder {run}\n" in (
        result.stderr
    )
    assert "stopped after step 1 (--max-steps); continue with --resume" in result.stderr


def test_loss_falls_on_a_learnable_problem(tmp_path):
    """Colour decides the label: a few epochs of stage 1 must cut the ranking loss clearly."""
    root = tmp_path / "toy"
    labels = root / "labels.txt"
    data = make_set(root, "train", 12)
    labels.write_text("red\ngreen\nblue\n")
    result = train(
        *("--data", data, "--val", data, "--labels", labels, "--out", root / "run"),
        *("--stage", 1, "--epochs", 6, "--warmup-epochs", 1, "-b", 3, "--lr", 3e-3),
        *("--no-augment", "--distill-weight", 0, "--seed", 0, *FAST),
    )
    assert result.exit_code == 0, result.output
    rows = metric_rows(root / "run")
    first, last = float(rows[0]["rank_loss"]), float(rows[-1]["rank_loss"])
    assert last < 0.5 * first, (first, last)
    assert float(rows[-1]["val_map"]) == 1.0


# --- resume -------------------------------------------------------------------------------

RESUME_ARGS = ["--epochs", 2, "--prompt-epochs", 2, "--warmup-epochs", 1]


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = train(*base_args(dataset, run), *RESUME_ARGS)
    assert result.exit_code == 0, result.output
    return run


def assert_same_run(run: Path, reference: Path) -> None:
    for name in ("last", "best"):
        mine, theirs = tensors(run / name), tensors(reference / name)
        assert mine.keys() == theirs.keys()
        different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
        assert not different, f"{name}: {different[:5]}"
    columns = ["stage", "epoch", "loss", "rank_loss", "distill_loss", "lr", "val_map", "best"]
    ours, reference_rows = metric_rows(run), metric_rows(reference)
    assert [[r[c] for c in columns] for r in ours] == [
        [r[c] for c in columns] for r in reference_rows
    ]


def test_resume_after_max_steps_gives_the_same_weights(dataset, tmp_path, uninterrupted):
    # 12 images, batch 4: 3 steps per epoch, 6 per stage, 12 in all.
    run = tmp_path / "run"
    first = train(*base_args(dataset, run), *RESUME_ARGS, "--save-every", 1, "--max-steps", 3)
    assert first.exit_code == 0, first.output
    assert "stopped after step 3" in first.stderr and "best:" not in first.stdout
    state = json.loads((run / "state" / "state.json").read_text())
    assert (state["stage"], state["epoch"], state["batch"], state["total_steps"]) == (1, 0, 3, 3)
    assert not (run / "metrics.csv").exists()  # stopped before the end of epoch 1

    # --resume takes no other settings than these; max-steps is not carried over.
    for stop in (8, 11):  # stage 2 epoch 1 (mid), stage 2 epoch 2 (mid)
        again = train("--resume", run, "--max-steps", stop, "--workers", 0)
        assert again.exit_code == 0, again.output
        assert json.loads((run / "state" / "state.json").read_text())["total_steps"] == stop
    assert json.loads((run / "train_config.json").read_text())["max_steps"] == 3
    final = train("--resume", run)
    assert final.exit_code == 0, final.output
    assert f"best: {run / 'best'}" in final.stdout
    assert json.loads((run / "state" / "state.json").read_text())["done"] == [1, 2]
    assert_same_run(run, uninterrupted)

    finished = train("--resume", run)  # nothing left to do
    assert finished.exit_code == 0 and len(metric_rows(run)) == 4
    assert f"nothing left to do: {run} has finished its stages" in finished.stderr
    assert "warning" not in finished.stderr and "img/s" not in finished.stdout  # no table
    assert f"best: {run / 'best'}" in finished.stdout


@pytest.mark.slow
def test_resume_after_kill_9(dataset, tmp_path, uninterrupted):
    """A real process killed at a random moment; the resumed run ends with the same weights."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mkt_tag", "train"]
    command += [str(a) for a in (*base_args(dataset, run), *RESUME_ARGS, "--save-every", 1)]
    # Bit-identical weights need the same thread count as this process (reductions split).
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run / "state" / "state.json"
    deadline = time.monotonic() + 120
    steps = 0
    while process.poll() is None and time.monotonic() < deadline:
        try:
            steps = json.loads(state.read_text())["total_steps"]
        except (OSError, ValueError, KeyError):
            steps = 0
        if steps >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    assert 2 <= steps < 12
    result = train("--resume", run)
    assert result.exit_code == 0, result.output
    assert_same_run(run, uninterrupted)


# --- data-parallel ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(dataset, tmp_path):
    """torchrun with 2 CPU processes and batch 8 (4 each) ends where one process with 8 does.

    The weights agree to float rounding (summation order differs), not bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RANK", None)
    single, double = tmp_path / "single", tmp_path / "ddp"
    settings = ["--epochs", 2, "--prompt-epochs", 1, "--warmup-epochs", 1]
    one = train(*base_args(dataset, single, batch_size=8, prompt_batch_size=8), *settings)
    assert one.exit_code == 0, one.output
    args = base_args(dataset, double, batch_size=8, prompt_batch_size=8) + settings
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = subprocess.run(
        [*torchrun, "--nproc_per_node", "2", "-m", "mkt_tag", "train", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("best:") == 1  # only the main process prints
    for name in ("last", "best"):
        ours, theirs = tensors(double / name), tensors(single / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            mine, reference = ours[key], theirs[key]
            if key.startswith("clip.visual.") and key.endswith("attn.in_proj_bias"):
                # The key bias cannot change any score (softmax ignores a shift shared by all
                # keys), so its true gradient is 0 and AdamW turns float noise into steps of
                # up to lr: compare the query and value biases only.
                width = mine.shape[0] // 3
                keep = torch.ones_like(mine, dtype=torch.bool)
                keep[width : 2 * width] = False
                mine, reference = mine[keep], reference[keep]
            torch.testing.assert_close(mine, reference, atol=1e-6, rtol=0, msg=key)
    ours_rows, single_rows = metric_rows(double), metric_rows(single)
    assert len(ours_rows) == len(single_rows) == 3
    for mine, theirs in zip(ours_rows, single_rows, strict=True):
        for column in ("loss", "rank_loss", "val_map"):
            assert float(mine[column]) == pytest.approx(float(theirs[column]), abs=1e-4)


# --- stage 2 alone ------------------------------------------------------------------------


def test_stage_2_from_a_stage_1_checkpoint(dataset, tmp_path):
    first = tmp_path / "first"
    result = train(
        *base_args(dataset, first), "--stage", 1, "--epochs", 1, "--warmup-epochs", 0,
        "--streams", "global",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["stage"] for r in metric_rows(first)] == ["1"]
    assert not (first / "features").exists()  # stage 1 caches nothing
    stage1 = tensors(first / "best")

    second = tmp_path / "second"
    args = base_args(dataset, second, model=first / "best")
    result = train(*args, "--stage", 2, "--prompt-epochs", 2)
    assert result.exit_code == 0, result.output
    assert [(r["stage"], r["epoch"]) for r in metric_rows(second)] == [("2", "1"), ("2", "2")]
    assert json.loads((second / "state" / "state.json").read_text())["done"] == [2]
    for run in (first, second):  # the ablation is recorded and kept by the next stage
        assert json.loads((run / "best" / "mkt_config.json").read_text())["streams"] == "global"
    prompt = tensors(second / "last")
    assert not torch.equal(prompt["prompt.prefix"], stage1["prompt.prefix"])
    for name, value in stage1.items():  # the vision side stays as stage 1 left it
        if name.startswith("clip.visual."):
            assert torch.equal(prompt[name], value), name


# --- settings -----------------------------------------------------------------------------


def test_config_file_and_flags(dataset, tmp_path):
    settings = tmp_path / "conf" / "train.toml"
    settings.parent.mkdir()
    rel = os.path.relpath(dataset["train"], settings.parent)
    settings.write_text(
        f'[train]\ndata = "{rel}"\nlabels = "{dataset["labels"]}"\nout = "run"\n'
        f'val = "{dataset["val"]}"\nmodel = "{TINY_CONFIG}"\nepochs = 1\nwarmup-epochs = 0\n'
        'stage = 1\nbatch_size = 6\nlr = 0.01\nworkers = 0\ndevice = "cpu"\n'
    )
    result = train("--config", settings, "-b", 4)
    assert result.exit_code == 0, result.output
    saved = json.loads((settings.parent / "run" / "train_config.json").read_text())
    assert saved["data"] == str(dataset["train"])  # relative to the file
    assert saved["batch_size"] == 4 and saved["epochs"] == 1 and saved["lr"] == 0.01
    assert saved["stage"] == "1"

    top_level = tmp_path / "top.toml"
    top_level.write_text(settings.read_text().replace("[train]\n", "").replace('"run"', '"r2"'))
    top_level.write_text(top_level.read_text().replace(f'"{rel}"', f'"{dataset["train"]}"'))
    result = train("--config", top_level, "--epochs", 1, "--max-steps", 1)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r2" / "train_config.json").read_text())["max_steps"] == 1


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("[train]\nepoch = 3\n", ["unknown setting 'epoch'"]),
        ("epochs = 'many'\n", ["epochs must be a whole number, not 'many'"]),
        ("epochs = 2.5\n", ["epochs must be a whole number"]),
        ("epochs = true\n", ["epochs must be a whole number, not True"]),
        ("augment = 1\n", ["augment must be true or false"]),
        ("lr = 'fast'\n", ["lr must be a number"]),
        ("workers = 'x'\n", ["workers must be a whole number"]),
        ("streams = 'both+'\n", ["streams must be one of both, global, local, not 'both+'"]),
        ("epochs = 0\nlr = -1\n", ["epochs must be at least 1", "lr must be positive"]),
        ("warmup-epochs = 30\n", ["warmup-epochs must be between 0 and epochs (20)"]),
        ("stage = 3\n", ["stage must be 1, 2 or all"]),
        ("template = 'no label'\n", ["template must contain '{label}'"]),
        ("[train]\nepochs = 1\n[other]\nx = 1\n", ["every setting in the [train] table"]),
        ("epochs = [\n", ["not a valid TOML file"]),
    ],
)
def test_bad_config_files(tmp_path, content, fragments):
    settings = tmp_path / "train.toml"
    settings.write_text(content)
    result = train("--config", settings, "--data", "x.csv", "--labels", "l.txt")
    assert_one_line_error(result, EXIT_ERROR, str(settings), *fragments)


def test_missing_config_file(tmp_path):
    result = train("--config", tmp_path / "nope.toml")
    assert_one_line_error(result, EXIT_ERROR, "nope.toml", "file not found")


def test_resume_rules(dataset, tmp_path, uninterrupted):
    result = train("--resume", uninterrupted, "--epochs", 5)
    assert_one_line_error(result, EXIT_USAGE, "only --device, --workers and --max-steps")
    result = train("--resume", uninterrupted, "--config", tmp_path / "x.toml")
    assert_one_line_error(result, EXIT_USAGE, "--resume")
    result = train("--resume", tmp_path)
    assert_one_line_error(result, EXIT_ERROR, str(tmp_path), "not a training run")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train_config.json").write_text("{broken")
    assert_one_line_error(train("--resume", bad), EXIT_ERROR, "unreadable")
    result = train(*base_args(dataset, uninterrupted))
    assert_one_line_error(result, EXIT_ERROR, "already holds a run", f"--resume {uninterrupted}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "photo.jpg").write_text("x")
    result = train(*base_args(dataset, tmp_path / "full"))
    assert_one_line_error(result, EXIT_ERROR, "is not an empty folder")


# --- errors -------------------------------------------------------------------------------


def test_missing_data_or_labels_is_a_usage_error(dataset, tmp_path):
    result = train("--labels", dataset["labels"], "--out", tmp_path / "r")
    assert_one_line_error(result, EXIT_USAGE, "give --data and --labels")
    result = train("--data", dataset["train"], "--out", tmp_path / "r")
    assert_one_line_error(result, EXIT_USAGE, "give --data and --labels")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "3"], "'3' is not one of"),
        (["--epochs", "many"], "Invalid value for '--epochs'"),
        (["--device", "tpu"], "'tpu' is not one of"),
        (["--streams", "neither"], "'neither' is not one of"),
    ],
)
def test_bad_flags_are_usage_errors(dataset, tmp_path, args, message):
    result = train(*base_args(dataset, tmp_path / "r"), *args)
    assert result.exit_code == EXIT_USAGE and message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "command line: --epochs must be at least 1"),
        (["--val-fraction", "1.5"], "command line: --val-fraction must be between 0 and 1"),
        (["--warmup-epochs", "30"], "--warmup-epochs must be between 0 and --epochs (20)"),
        (["--epochs", "2", "--warmup-epochs", "3"], "between 0 and --epochs (2)"),
        (["--separator", ""], "command line: --separator must not be empty"),
    ],
)
def test_impossible_flag_values_are_usage_errors(dataset, tmp_path, args, message):
    result = train(*base_args(dataset, tmp_path / "r"), *args)
    assert_one_line_error(result, EXIT_USAGE, message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# nothing\n", "no labels"),
        (None, "file not found"),
        ("red\n" + "word " * 80 + "\n", "too long for the text context"),
    ],
)
def test_bad_label_files(dataset, tmp_path, content, message):
    labels = tmp_path / "labels.txt"
    if content is not None:
        labels.write_text(content)
    result = train(*base_args(dataset, tmp_path / "r", labels=labels))
    assert_one_line_error(result, EXIT_ERROR, str(labels), message)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("path,labels\n", ["no usable labelled images (the file has no rows)"]),
        ("path,labels\na.png,red\nb.png,blue\n", ["2 rows whose image is missing", "a.png"]),
        (None, ["file not found"]),
    ],
)
def test_empty_dataset_and_all_images_missing(dataset, tmp_path, content, fragments):
    data = tmp_path / "train.csv"
    if content is not None:
        data.write_text(content)
    result = train(*base_args(dataset, tmp_path / "r", data=data))
    assert_one_line_error(result, EXIT_ERROR, str(data), *fragments)
    assert not (tmp_path / "r").exists()


def test_strict_fails_on_unknown_labels(dataset, tmp_path):
    result = train(*base_args(dataset, tmp_path / "r"), "--strict")
    assert_one_line_error(result, EXIT_ERROR, "--strict", "1 labels not in the vocabulary")


def test_unknown_model_and_too_many_trainable_blocks(dataset, tmp_path):
    result = train(*base_args(dataset, tmp_path / "r", model="NoSuchNet:openai"))
    assert_one_line_error(result, EXIT_ERROR, "unknown model 'NoSuchNet:openai'")
    result = train(*base_args(dataset, tmp_path / "r2"), "--trainable-blocks", 5)
    assert_one_line_error(result, EXIT_ERROR, "trainable_blocks must be 1..2")


def test_unreadable_image_is_skipped_with_a_warning(dataset, tmp_path):
    root = tmp_path / "set"
    data = make_set(root, "train", 8)
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with data.open("a") as handle:
        handle.write("img/broken.png,red\n")
    result = train(
        *("--data", data, "--val", dataset["val"], "--labels", dataset["labels"]),
        *("--out", tmp_path / "run", "-b", 3, "--prompt-batch-size", 3, *FAST),
        *("--epochs", 2, "--prompt-epochs", 1, "--warmup-epochs", 0),
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(warnings) == 1 and "skipped" in warnings[0]  # once, not once per epoch
    assert "truncated or corrupt image data" in warnings[0] or "not an image" in warnings[0]
    assert "Traceback" not in result.output
    rows = metric_rows(tmp_path / "run")
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)
    failed = json.loads((tmp_path / "run" / "features" / "train.json").read_text())["failed"]
    assert len(failed) == 1
