"""How far can the backbone's frozen features go? A linear probe per seen label.

One logistic regression per seen label on the frozen backbone's projected class-token features
(``global``) of the training images, scored on the test images: the seen mAP that a classifier
with its own weights per label reaches on these features, against which MKT (fixed label
embeddings from the text tower, no per-label weights) can be read.

    python bench/synthetic/probe.py      # after experiment.py (uses its world and backbone)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import world


def features(model_id: str, table: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Projected class-token features (N x D) of a split's images and its +1/-1 targets."""
    import torch

    from mkt_tag import checkpoints
    from mkt_tag.model import normalise_pixels

    pixels, targets = world.read_split(table, labels)
    model = checkpoints.load(model_id).eval()
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        encoded = model.encode_images(
            normalise_pixels(images, model.config.preprocess, torch.float32)
        )
    return encoded.global_.numpy(), targets


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from mkt_tag.evaluate import metrics

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/synthetic"))
    args = parser.parse_args()
    folder = args.out.absolute() / "world"
    seen = (folder / "seen.txt").read_text(encoding="utf-8").split()
    backbone = f"local-dir:{args.out.absolute() / 'backbone'}"
    train_x, train_y = features(backbone, folder / "train.csv", seen)
    test_x, test_y = features(backbone, folder / "test.csv", seen)
    scores = np.zeros(test_y.shape)
    for j in range(len(seen)):
        probe = LogisticRegression(max_iter=2000).fit(train_x, train_y[:, j] > 0)
        scores[:, j] = probe.decision_function(test_x)
    ap = metrics.average_precision(scores, test_y).ap
    print(
        f"linear probe on frozen features, {len(train_x)} training images: "
        f"test seen mAP {metrics.mean_average_precision(ap):.3f} over {len(seen)} labels"
    )


if __name__ == "__main__":
    main()
