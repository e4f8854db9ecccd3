"""Label encoding speed: mkt-tag's real-length text path vs open_clip's padded encode_text.

Encodes N labels (default 1,000) with ViT-B-16's text tower (random weights: speed does not
depend on values) both ways, checks they agree (max relative error), and prints seconds,
labels/s and the speed-up, in fp32 and in the precision `mkt-tag tag` picks here.

    python bench/text_speed.py [--n-labels 1000] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import BACKBONE, OUT, OtherLoad, labels, machine_info, offline_env, seed_hub_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-labels", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    cache = args.out / "cache"
    seed_hub_cache(cache)
    import os

    os.environ.update(offline_env(cache))
    import open_clip
    import torch

    from mkt_tag import checkpoints
    from mkt_tag.devices import pick_dtype

    texts = labels(args.n_labels)
    model = checkpoints.load(BACKBONE).eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    prompts = [model.config.template.replace("{label}", t) for t in texts]
    auto = pick_dtype("auto", torch.device("cpu"))
    rows = []
    load = OtherLoad()
    for dtype in dict.fromkeys([torch.float32, auto]):
        model.to(dtype)
        with torch.inference_mode():
            model.encode_labels(texts[:8])  # warm-up
            started = time.perf_counter()
            fast = model.encode_labels(texts, batch_size=args.batch_size).float()
            fast_s = time.perf_counter() - started
            started = time.perf_counter()
            padded = torch.cat(
                [
                    model.clip.encode_text(tokenizer(prompts[i : i + args.batch_size]))
                    for i in range(0, len(prompts), args.batch_size)
                ]
            ).float()
            padded_s = time.perf_counter() - started
        error = float(((fast - padded).norm(dim=1) / padded.norm(dim=1)).max())
        rows.append(
            {
                "dtype": str(dtype)[6:],
                "labels": len(texts),
                "encode_text_s": padded_s,
                "mkt_tag_s": fast_s,
                "speedup": padded_s / fast_s,
                "max_relative_error": error,
            }
        )
    info = {**machine_info(), "other_load_cpus": load.cpus()}
    print(f"{len(texts)} labels, {info['cpu']} ({info['cpus_usable']} CPUs), torch {info['torch']}")
    print(f"{'dtype':<10}{'encode_text s':>15}{'mkt-tag s':>12}{'speed-up':>10}{'max rel err':>13}")
    for row in rows:
        print(
            f"{row['dtype']:<10}{row['encode_text_s']:>15.2f}{row['mkt_tag_s']:>12.2f}"
            f"{row['speedup']:>9.1f}x{row['max_relative_error']:>13.1e}"
        )
    if info["other_load_cpus"]:
        print(f"other processes kept {info['other_load_cpus']:.2f} CPUs busy meanwhile")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text_speed.json").write_text(json.dumps({"rows": rows, "machine": info}, indent=2))


if __name__ == "__main__":
    main()
