"""mkt-tag: open-vocabulary multi-label image tagging with MKT.

>>> from mkt_tag import Tagger
>>> Tagger.load().tag(["photo.jpg"], ["dog", "beach"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mkt_tag._lazy import lazy_attributes
from mkt_tag._version import __version__

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

# Imported on first use: `mkt-tag --help` should not pay for importing torch.
__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["MktTagError", "Tag", "TagResult", "Tagger", "__version__"]
