"""``mkt-tag`` with the local stream switched off: an approximation for the ablation.

mkt-tag has no setting that removes the local stream (``top_k`` only changes how many patches
it averages). Until it has one, this runs the real CLI with MKT's fusion replaced by the
global stream alone, L2-normalised across labels as it is inside the fusion:
``s = s_g / ||s_g||``. Every score goes through ``mkt_tag.model.fuse`` (training loss,
validation, ``eval``), so training and evaluation both see global-only scores. Checkpoints
written this way do not record it: evaluate them through this module too.

    python bench/synthetic/global_only.py train ...   # same arguments as `mkt-tag train`
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import mkt_tag.model


def global_only(global_scores: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Replaces MKT's fusion: the global stream's scores only, normalised across labels."""
    return F.normalize(global_scores, dim=-1)


def main() -> None:
    mkt_tag.model.fuse = global_only
    from mkt_tag.cli import main as cli

    sys.argv[0] = "mkt-tag"
    cli()


if __name__ == "__main__":
    main()
