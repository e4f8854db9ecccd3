"""mkt-tag: open-vocabulary multi-label image tagging with MKT.

>>> from mkt_tag import Tagger
>>> Tagger.load().tag(["photo.jpg"], ["dog", "beach"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mkt_tag.errors import MktTagError
    from mkt_tag.outputs import Tag, TagResult
    from mkt_tag.tagger import Tagger

_LAZY = {
    "MktTagError": "mkt_tag.errors",
    "Tag": "mkt_tag.outputs",
    "TagResult": "mkt_tag.outputs",
    "Tagger": "mkt_tag.tagger",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: `mkt-tag --help` should not pay for importing torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mkt_tag' has no attribute {name!r}")


__all__ = ["MktTagError", "Tag", "TagResult", "Tagger", "__version__"]
