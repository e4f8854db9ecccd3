"""MKT in the synthetic open-vocabulary world, end to end through the real CLI.

One command builds a world (``world.py``; ``--world large``, the first, or ``--world small``,
small objects among many in larger images), pretrains the tiny CLIP backbone on its captions
(``pretrain.py``; reused when already there with the same settings), then, with that backbone
and the same data, trains and evaluates with ``mkt-tag train`` / ``mkt-tag eval`` run as
subprocesses:

- zero-shot: the untrained backbone under MKT's two-stream scoring (``eval --streams both``),
  and with the global stream only (``eval --streams global``);
- MKT: stage 1, then stage 2 (prompt tuning) from stage 1's ``best/``. This is what
  ``--stage all`` does, run as two commands so that the stage-1 checkpoint stays for the next row;
- no stage 2: that stage-1 checkpoint (``--stage 1``);
- no distillation: both stages, stage 1 with ``--distill-weight 0``;
- global stream only / local stream only: both stages with ``--streams global`` or
  ``--streams local`` (each stream's scores L2-normalised as inside the fusion), which the
  checkpoint records, so ``eval`` scores the same way.

Each trained condition runs with several seeds (data order, initial prompt order, choice of the
best epoch on validation); the backbone and the data stay the same. Results: ZSL mAP (unseen
labels), GZSL mAP (all labels), seen mAP, F1@3, as mean and sample standard deviation over
seeds, printed and written to ``results.json`` and ``results.md``, with each stream's mAP for
the first seed. Finished runs are reused on a rerun (``--fresh`` starts over).

    python bench/synthetic/experiment.py                # 26 minutes on 2 cores
    python bench/synthetic/experiment.py --world small  # into bench/out/synthetic-small
    python bench/synthetic/experiment.py --quick    # a smoke test of the whole chain
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pretrain  # noqa: E402
import world  # noqa: E402
from _common import OtherLoad, machine_info  # noqa: E402

MKT_TAG = [sys.executable, "-m", "mkt_tag"]

# Stage 1 is shortened from the paper's 20 epochs (2 of warm-up) at batch 64 to 8 epochs (1)
# at batch 32, to fit the time budget, and runs without augmentation: RandomResizedCrop down to
# 8% of a 64-pixel image crops the labelled objects out (see docs/benchmarks.md). Everything
# else is mkt-tag's default, i.e. the paper's: lr 1e-3, last 2 blocks, layer decay 0.65,
# distillation weight 1, top-k 16, 4 prompt-tuning epochs.
TRAIN_SETTINGS = [
    "--epochs",
    "8",
    "--warmup-epochs",
    "1",
    "--batch-size",
    "32",
    "--no-augment",
    "--device",
    "cpu",
]
EVAL_SETTINGS = ["--batch-size", "250", "--device", "cpu", "--precision", "fp32"]


@dataclass
class Condition:
    """One row of the table."""

    name: str
    note: str
    stage1: list[str] | None  # extra `train --stage 1` arguments; None: no training (zero-shot)
    stage2: bool = True  # then prompt tuning (`train --stage 2` from stage 1's best/)
    eval_args: list[str] = field(default_factory=list)  # extra `eval` arguments


CONDITIONS = [
    Condition(
        "zero-shot", "untrained backbone, MKT scoring", None, eval_args=["--streams", "both"]
    ),
    Condition(
        "zero-shot, global only", "--streams global", None, eval_args=["--streams", "global"]
    ),
    Condition("MKT", "both stages", []),
    Condition("no distillation", "--distill-weight 0", ["--distill-weight", "0"]),
    Condition("global stream only", "--streams global", ["--streams", "global"]),
    Condition("local stream only", "--streams local", ["--streams", "local"]),
    Condition("no stage 2", "--stage 1 only", [], stage2=False),
]
METRICS = ("zsl_map", "gzsl_map", "seen_map", "zsl_f1_3", "gzsl_f1_3")
HEADERS = ("ZSL mAP", "GZSL mAP", "seen mAP", "ZSL F1@3", "GZSL F1@3")


def run(command: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a command, its output into ``log``; seconds taken. A failure stops the experiment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-20:])
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(command)}\n{tail}")
    return time.perf_counter() - started


def read_metrics(folder: Path) -> dict[str, float]:
    rows = json.loads((folder / "metrics.json").read_text())["rows"]
    return {
        "zsl_map": rows["ZSL"]["map"],
        "gzsl_map": rows["GZSL"]["map"],
        "seen_map": rows["seen"]["map"],
        "zsl_f1_3": rows["ZSL"]["at_k"]["3"]["f1"],
        "gzsl_f1_3": rows["GZSL"]["at_k"]["3"]["f1"],
    }


def best_epoch(run_dir: Path) -> str:
    """Which epoch the run's best/ checkpoint is ("stage 1 epoch 7")."""
    try:
        return str(json.loads((run_dir / "state" / "state.json").read_text()).get("best", ""))
    except (OSError, ValueError):
        return ""


class Runner:
    """Runs `mkt-tag train` and `mkt-tag eval`, skipping what an earlier run finished."""

    def __init__(self, out: Path, data: dict[str, Path], backbone: str) -> None:
        self.out = out
        self.data = data
        self.backbone = backbone
        self.env = {**os.environ, **offline_env(out)}
        self.commands: list[str] = []
        self.seconds: dict[str, float] = {}

    def train(self, name: str, model: str, seed: int, extra: list[str]) -> Path:
        run_dir = self.out / "runs" / name
        args = [
            *MKT_TAG,
            "train",
            "--data",
            str(self.data["train"]),
            "--labels",
            str(self.data["seen"]),
            "--val",
            str(self.data["val"]),
            "--model",
            model,
            "--out",
            str(run_dir),
            "--seed",
            str(seed),
            *TRAIN_SETTINGS,
            *extra,
        ]
        done = (run_dir / "best").is_dir()
        if not done:
            shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
        self._once(name, args, done)
        return run_dir

    def evaluate(self, name: str, model: str, extra: list[str]) -> dict[str, float]:
        eval_dir = self.out / "evals" / name
        args = [
            *MKT_TAG,
            "eval",
            "--data",
            str(self.data["test"]),
            "--labels",
            str(self.data["all"]),
            "--unseen",
            str(self.data["unseen"]),
            "--model",
            model,
            "--out",
            str(eval_dir),
            *EVAL_SETTINGS,
            *extra,
        ]
        self._once(f"{name}-eval", args, done=(eval_dir / "metrics.json").is_file())
        return read_metrics(eval_dir)

    def _once(self, name: str, args: list[str], done: bool) -> None:
        """Record the command; run it (output in ``logs/NAME.log``) unless ``done``."""
        self.commands.append(shlex.join(args))
        if not done:
            self.seconds[name] = round(run(args, self.out / "logs" / f"{name}.log", self.env), 1)

    def condition(self, condition: Condition, seed: int | None) -> dict[str, Any]:
        """Train (unless zero-shot) and evaluate one condition with one seed."""
        slug = condition.name.replace(",", "").replace(" ", "-")
        record: dict[str, Any] = {"condition": condition.name, "seed": seed}
        model = self.backbone
        if condition.stage1 is not None:
            assert seed is not None
            # "no stage 2" evaluates the very stage-1 run that MKT's stage 2 starts from.
            kind = "mkt" if not condition.stage1 else slug
            stage1 = self.train(
                f"{kind}-stage1-seed{seed}",
                self.backbone,
                seed,
                ["--stage", "1", *condition.stage1],
            )
            record["best"] = best_epoch(stage1)
            model = str(stage1 / "best")
            if condition.stage2:
                stage2 = self.train(f"{kind}-stage2-seed{seed}", model, seed, ["--stage", "2"])
                record["best"] += ", then " + best_epoch(stage2)
                model = str(stage2 / "best")
        record["model"] = model
        name = slug if seed is None else f"{slug}-seed{seed}"
        record["metrics"] = self.evaluate(name, model, condition.eval_args)
        return record


def offline_env(out: Path) -> dict[str, str]:
    """mkt-tag never reaches the network here, and keeps its cache inside ``out``."""
    return {"HF_HUB_OFFLINE": "1", "MKT_TAG_CACHE": str(out / "cache")}


def streams(model_id: str, data: dict[str, Path], unseen: int) -> dict[str, dict[str, float]]:
    """Test mAP (all / seen / unseen labels) of each stream of a model and of their fusion.

    Through the library rather than the CLI: `eval` reports the fused scores only.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mkt_tag import checkpoints, vocab
    from mkt_tag.evaluate import metrics
    from mkt_tag.model import mkt_scores, normalise_pixels

    labels = vocab.read_labels(data["all"]).labels
    pixels, targets = world.read_split(data["test"], labels)
    model = checkpoints.load(model_id).eval()
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        features = model.encode_images(
            normalise_pixels(images, model.config.preprocess, torch.float32)
        )
        # "fused" is MKT's two-stream fusion whatever the model's own streams setting
        label_embeddings = model.encode_labels(labels).float()
        scores = mkt_scores(features, label_embeddings, model.config.top_k, "both")
    found = {}
    for name, matrix in (
        ("global", scores.global_),
        ("global, normalised", F.normalize(scores.global_, dim=-1)),
        ("local", scores.local),
        ("fused", scores.fused),
    ):
        ap = metrics.average_precision(matrix.numpy(), targets).ap
        found[name] = {
            "all": float(np.mean(ap)),
            "seen": float(np.mean(ap[:-unseen])),
            "unseen": float(np.mean(ap[-unseen:])),
        }
    return found


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of each metric over seeds, per condition."""
    rows = []
    for condition in CONDITIONS:
        mine = [r for r in records if r["condition"] == condition.name]
        if not mine:
            continue
        row: dict[str, Any] = {"condition": condition.name, "note": condition.note}
        row["runs"] = len(mine)
        for metric in METRICS:
            values = [r["metrics"][metric] for r in mine]
            row[metric] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        "| condition | runs | " + " | ".join(HEADERS) + " |",
        "|" + " --- |" * (len(HEADERS) + 2),
    ]
    for row in rows:
        cells = []
        for metric in METRICS:
            value = row[metric]
            spread = f" ± {100 * value['std']:.1f}" if row["runs"] > 1 else ""
            cells.append(f"{100 * value['mean']:.1f}{spread}")
        name = f"{row['condition']} ({row['note']})"
        lines.append(f"| {name} | {row['runs']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"In %: mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
        "(zero-shot rows: one run, nothing random)."
    )
    return "\n".join(lines) + "\n"


def stream_markdown(found: dict[str, dict[str, dict[str, float]]], seed: int) -> str:
    """Each stream's test mAP, seen / unseen labels, per model."""
    names = list(next(iter(found.values())))
    lines = ["| model | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for model, per_stream in found.items():
        cells = [f"{100 * v['seen']:.1f} / {100 * v['unseen']:.1f}" for v in per_stream.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Test mAP in %, seen / unseen labels, of each score (seed {seed}; every score over all "
        '20 labels; "normalised": L2 across labels per image, as inside the fusion).'
    )
    return "\n".join(lines) + "\n"


def backbone_for(
    out: Path, config: pretrain.PretrainConfig, test_images: int, spec: world.Spec
) -> dict[str, Any]:
    """Pretrain the backbone into ``out`` unless it is there with ``config``; its record."""
    record_file = out / "pretrain.json"
    saved = json.loads(record_file.read_text()) if record_file.is_file() else {}
    arch = pretrain.arch_for(spec.layout)
    # the number of threads changes how fast, not what (beyond float rounding): not compared
    wanted = {k: v for k, v in asdict(config).items() if k != "threads"}
    found = {k: v for k, v in saved.get("config", {}).items() if k != "threads"}
    if found == wanted and saved.get("arch") == arch and "zero_shot" in saved:
        return dict(saved)
    print(f"pretraining the backbone ({config.steps} steps) ...", flush=True)
    pretrain.pretrain(out, config, arch, log_every=max(1, config.steps // 10), spec=spec)
    return pretrain.record_zero_shot(out, test_images, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--world",
        choices=sorted(world.WORLDS),
        default="large",
        help="large: 1-4 large objects in 64-px images; small: 2-5 small ones in 128-px images.",
    )
    parser.add_argument(
        "--out", type=Path, help="Default: bench/out/synthetic, or bench/out/synthetic-small."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fresh", action="store_true", help="Delete earlier results first.")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads of every step (pretraining and each command); 1 runs the two "
        "worlds side by side on 2 cores without their threads spinning against each other.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="Small world, short pretraining, one seed."
    )
    args = parser.parse_args()
    spec = world.WORLDS[args.world]
    default_out = "bench/out/synthetic" + ("" if args.world == "large" else f"-{args.world}")
    out: Path = (args.out or Path(default_out)).absolute()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    load = OtherLoad()
    started = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the commands' torch threads
    config = pretrain.PretrainConfig(threads=args.threads)
    sizes = dict(world.DEFAULT_SIZES)
    if args.quick:
        config = pretrain.PretrainConfig(images=2000, steps=100, warmup=10, threads=args.threads)
        sizes.update(train=300, val=100, test=200)
        args.seeds = args.seeds[:1]
    timings: dict[str, float] = {}

    data = world.write_world(out / "world", sizes, spec)
    timings["world_seconds"] = round(time.perf_counter() - started, 1)

    begun = time.perf_counter()
    saved = backbone_for(out / "backbone", config, sizes["test"], spec)
    timings["pretrain_seconds"] = round(time.perf_counter() - begun, 1)
    clip = saved["zero_shot"]
    print(
        "backbone zero-shot (CLIP scoring, cosine): mAP all {map_all:.3f}, seen {map_seen:.3f}, "
        "unseen {map_unseen:.3f} (chance {chance_map:.3f})".format(**clip),
        flush=True,
    )
    backbone = f"local-dir:{out / 'backbone'}"

    runner = Runner(out, data, backbone)
    records = []
    for condition in CONDITIONS:
        seeds: list[int | None] = [None] if condition.stage1 is None else list(args.seeds)
        for seed in seeds:
            begun = time.perf_counter()
            record = runner.condition(condition, seed)
            records.append(record)
            m = record["metrics"]
            best = f", best: {record['best']}" if record.get("best") else ""
            print(
                f"{condition.name:<24} seed {seed!s:<4} ZSL {m['zsl_map']:.3f}  "
                f"GZSL {m['gzsl_map']:.3f}  seen {m['seen_map']:.3f}  "
                f"({time.perf_counter() - begun:.0f}s{best})",
                flush=True,
            )

    # Where the changes come from: each stream's mAP, untrained and trained (first seed).
    first = args.seeds[0]
    runs = out / "runs"
    diagnosed = {
        "zero-shot": backbone,
        "no stage 2": str(runs / f"mkt-stage1-seed{first}" / "best"),
        "MKT": str(runs / f"mkt-stage2-seed{first}" / "best"),
        "no distillation": str(runs / f"no-distillation-stage2-seed{first}" / "best"),
    }
    os.environ.update(offline_env(out))
    import torch

    torch.set_num_threads(args.threads)
    n_unseen = len(spec.unseen)
    stream_maps = {name: streams(model, data, n_unseen) for name, model in diagnosed.items()}

    rows = summarise(records)
    table = markdown(rows, args.seeds)
    stream_table = stream_markdown(stream_maps, first)
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    other = load.cpus()
    result = {
        "rows": rows,
        "runs": records,
        "streams": stream_maps,
        "backbone_zero_shot_clip": clip,
        "pretrain": {k: v for k, v in saved.items() if k != "zero_shot"},
        "world_name": args.world,
        "world": json.loads((out / "world" / "world.json").read_text()),
        "train_settings": TRAIN_SETTINGS,
        "eval_settings": EVAL_SETTINGS,
        "seeds": args.seeds,
        "threads": args.threads,
        "commands": runner.commands,
        "command_seconds": runner.seconds,
        "timings": timings,
        "other_load_cpus": None if other is None else round(other, 2),
        "machine": machine_info(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(table + "\n" + stream_table)
    print()
    print(table)
    print(stream_table)
    load_note = "" if other is None else f"; other processes kept {other:.1f} CPUs busy meanwhile"
    print(f"total {timings['total_seconds'] / 60:.1f} min{load_note}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
