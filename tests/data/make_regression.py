"""Regenerate regression_scores.pt, only when a numeric change is intended.

Run from the repository root: python -m tests.data.make_regression
"""

from pathlib import Path

import torch

from tests.test_model import regression_scores

scores = regression_scores()
torch.save(scores, Path(__file__).parent / "regression_scores.pt")
print(scores)
