"""mkt-tag: open-vocabulary multi-label image tagging with MKT.

>>> from mkt_tag import Tagger
>>> Tagger.load().tag(["photo.jpg"], ["dog", "beach"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mkt_tag.errors import MktTagError
    from mkt_tag.results import Tag, TagResult
    from mkt_tag.tagging.tagger import Tagger

_LAZY = {
    "MktTagError": "mkt_tag.errors",
    "Tag": "mkt_tag.results",
    "TagResult": "mkt_tag.results",
    "Tagger": "mkt_tag.tagging.tagger",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: `mkt-tag --help` should not pay for importing torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mkt_tag' has no attribute {name!r}")


__all__ = ["MktTagError", "Tag", "TagResult", "Tagger", "__version__"]
