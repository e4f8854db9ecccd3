"""``mkt_tag.evaluate`` stays light: ``train`` imports its metrics, and a scores file is
evaluated without the model stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mkt_tag.evaluate

HEAVY = ("torch", "open_clip", "mkt_tag.tagging", "mkt_tag.train", "typer", "rich")


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    probe = (
        f"{code}\nimport sys\nheavy = {HEAVY!r}\n"
        "print(*(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.split()


def test_the_package_and_its_metrics_do_not_import_torch():
    assert imported_after("import mkt_tag.evaluate, mkt_tag.evaluate.metrics") == []


def test_evaluating_saved_scores_needs_no_torch():
    code = "from mkt_tag.evaluate import evaluate_saved_scores, EvalResult, ScoreSet"
    assert imported_after(code) == []


def test_the_probe_sees_heavy_modules():  # the tests above can fail (rich: quicker than torch)
    assert "rich.console" in imported_after("import rich.console")
    assert "mkt_tag.tagging" in imported_after("import mkt_tag.tagging")


@pytest.mark.parametrize("name", mkt_tag.evaluate.__all__)
def test_every_public_name_resolves(name):
    assert getattr(mkt_tag.evaluate, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = mkt_tag.evaluate.no_such_thing  # type: ignore[attr-defined]
