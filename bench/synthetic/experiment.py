"""MKT in the synthetic open-vocabulary world, end to end through the real CLI.

One command builds the world (``world.py``), pretrains the tiny CLIP backbone on its captions
(``pretrain.py``; reused when already there with the same settings), then, with that backbone
and the same data, trains and evaluates with ``mkt-tag train`` / ``mkt-tag eval`` as
subprocesses:

- zero-shot: the untrained backbone under MKT's two-stream scoring (``eval --model local-dir:``);
- MKT: both stages, the paper's method (``train`` with its defaults, shortened schedule);
- no distillation: ``--distill-weight 0``;
- global stream only: the local stream switched off, in training and evaluation; mkt-tag has
  no setting for this, so it runs through ``global_only.py`` (an approximation; see there);
- no stage 2: ``--stage 1`` (no prompt tuning).

Each trained condition runs with several seeds (data order, augmentation, validation choice of
the best epoch); the backbone and data stay the same. Results: ZSL mAP (unseen labels), GZSL mAP
(all labels), seen mAP, F1@3, as mean and sample standard deviation over seeds, printed and
written to ``results.json`` and ``results.md``. Finished runs are reused on a rerun (delete the
output folder, or ``--fresh``, to start over).

    python bench/synthetic/experiment.py            # ~30 minutes on 2 cores
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
GLOBAL_ONLY = [sys.executable, str(HERE / "global_only.py")]

# Stage-1 schedule shortened from the paper's 20 epochs (2 warm-up) to fit the time budget; every
# other setting is mkt-tag's default (the paper's), augmentation included.
TRAIN_SETTINGS = [
    "--epochs",
    "5",
    "--warmup-epochs",
    "1",
    "--device",
    "cpu",
]
EVAL_SETTINGS = ["--batch-size", "250", "--device", "cpu", "--precision", "fp32"]


@dataclass
class Condition:
    """One row of the table."""

    name: str
    note: str
    train: list[str] | None  # extra `mkt-tag train` arguments; None: no training (zero-shot)
    command: list[str] = field(default_factory=lambda: MKT_TAG)  # how mkt-tag is run


CONDITIONS = [
    Condition("zero-shot", "untrained backbone, MKT scoring", None),
    Condition("MKT", "both stages", []),
    Condition("no distillation", "--distill-weight 0", ["--distill-weight", "0"]),
    Condition("global stream only", "local stream off (approximation)", [], GLOBAL_ONLY),
    Condition("no stage 2", "--stage 1", ["--stage", "1"]),
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
    """Which epoch the run's best/ checkpoint is ("stage 2 epoch 3")."""
    try:
        return str(json.loads((run_dir / "state" / "state.json").read_text()).get("best", ""))
    except (OSError, ValueError):
        return ""


def one(
    condition: Condition,
    seed: int | None,
    out: Path,
    data: dict[str, Path],
    backbone: str,
    env: dict[str, str],
) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one condition with one seed."""
    slug = condition.name.replace(" ", "-") + ("" if seed is None else f"-seed{seed}")
    run_dir, eval_dir = out / "runs" / slug, out / "evals" / slug
    record: dict[str, Any] = {"condition": condition.name, "seed": seed, "commands": []}
    model = backbone
    if condition.train is not None:
        train = [
            *condition.command,
            "train",
            "--data",
            str(data["train"]),
            "--labels",
            str(data["seen"]),
            "--val",
            str(data["val"]),
            "--model",
            backbone,
            "--out",
            str(run_dir),
            "--seed",
            str(seed),
            *TRAIN_SETTINGS,
            *condition.train,
        ]
        record["commands"].append(shlex.join(train))
        if not (run_dir / "best").is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
            record["train_seconds"] = round(run(train, out / "logs" / f"{slug}-train.log", env), 1)
        record["best"] = best_epoch(run_dir)
        model = str(run_dir / "best")
    evaluate = [
        *condition.command,
        "eval",
        "--data",
        str(data["test"]),
        "--labels",
        str(data["all"]),
        "--unseen",
        str(data["unseen"]),
        "--model",
        model,
        "--out",
        str(eval_dir),
        *EVAL_SETTINGS,
    ]
    record["commands"].append(shlex.join(evaluate))
    if not (eval_dir / "metrics.json").is_file():
        record["eval_seconds"] = round(run(evaluate, out / "logs" / f"{slug}-eval.log", env), 1)
    record["metrics"] = read_metrics(eval_dir)
    return record


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of each metric over seeds, per condition."""
    rows = []
    for condition in CONDITIONS:
        mine = [r for r in records if r["condition"] == condition.name]
        if not mine:
            continue
        row: dict[str, Any] = {
            "condition": condition.name,
            "note": condition.note,
            "runs": len(mine),
        }
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
    head = "| condition | runs | " + " | ".join(HEADERS) + " |"
    lines = [head, "|" + " --- |" * (len(HEADERS) + 2)]
    for row in rows:
        cells = []
        for metric in METRICS:
            value = row[metric]
            spread = f" ± {100 * value['std']:.1f}" if row["runs"] > 1 else ""
            cells.append(f"{100 * value['mean']:.1f}{spread}")
        lines.append(f"| {row['condition']} | {row['runs']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"In %, mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
        "(zero-shot: one run, no seed)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/synthetic"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fresh", action="store_true", help="Delete earlier results first.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Tiny world, short pretraining, one seed: a smoke test.",
    )
    args = parser.parse_args()
    out: Path = args.out.absolute()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    load = OtherLoad()
    started = time.perf_counter()
    config = pretrain.PretrainConfig()
    sizes = None
    if args.quick:
        config = pretrain.PretrainConfig(images=2000, steps=100, batch_size=64, warmup=10)
        sizes = {"train": 300, "val": 100, "test": 200}
        args.seeds = args.seeds[:1]
    timings: dict[str, float] = {}

    # The world: label files and the train / val / test images.
    world_dir = out / "world"
    data = world.write_world(world_dir, sizes)
    timings["world_seconds"] = round(time.perf_counter() - started, 1)

    # The backbone, pretrained on captions of every concept (reused when up to date).
    backbone_dir = out / "backbone"
    record_file = backbone_dir / "pretrain.json"
    saved = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if saved.get("config") != asdict(config) or "zero_shot" not in saved:
        print(f"pretraining the backbone ({config.steps} steps) ...", flush=True)
        begun = time.perf_counter()
        pretrain.pretrain(backbone_dir, config, log_every=max(1, config.steps // 10))
        test = list(
            world.samples(world.SPLIT_SEEDS["test"], (sizes or world.DEFAULT_SIZES)["test"])
        )
        saved = json.loads(record_file.read_text())
        saved["zero_shot"] = pretrain.zero_shot(backbone_dir, test)
        record_file.write_text(json.dumps(saved, indent=2) + "\n")
        timings["pretrain_seconds"] = round(time.perf_counter() - begun, 1)
    clip_zero_shot = saved["zero_shot"]
    print(
        "backbone zero-shot (CLIP scoring): mAP all {map_all:.3f}, seen {map_seen:.3f}, "
        "unseen {map_unseen:.3f} (chance {chance_map:.3f})".format(**clip_zero_shot),
        flush=True,
    )
    backbone = f"local-dir:{backbone_dir}"

    # Every mkt-tag run is offline, with its own cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MKT_TAG_CACHE": str(out / "cache")}
    records = []
    for condition in CONDITIONS:
        seeds: list[int | None] = [None] if condition.train is None else list(args.seeds)
        for seed in seeds:
            begun = time.perf_counter()
            record = one(condition, seed, out, data, backbone, env)
            records.append(record)
            m = record["metrics"]
            print(
                f"{condition.name:<20} seed {seed!s:<4} ZSL {m['zsl_map']:.3f}  "
                f"GZSL {m['gzsl_map']:.3f}  seen {m['seen_map']:.3f}  "
                f"({time.perf_counter() - begun:.0f}s"
                f"{', best ' + record['best'] if record.get('best') else ''})",
                flush=True,
            )
    rows = summarise(records)
    table = markdown(rows, args.seeds)
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    other = load.cpus()
    result = {
        "rows": rows,
        "runs": records,
        "backbone_zero_shot_clip": clip_zero_shot,
        "pretrain": {k: v for k, v in saved.items() if k != "zero_shot"},
        "train_settings": TRAIN_SETTINGS,
        "eval_settings": EVAL_SETTINGS,
        "seeds": args.seeds,
        "timings": timings,
        "other_load_cpus": None if other is None else round(other, 2),
        "machine": machine_info(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(table)
    print()
    print(table)
    load_note = "" if other is None else f"; other processes kept {other:.1f} CPUs busy meanwhile"
    print(f"total {timings['total_seconds'] / 60:.1f} min{load_note}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
