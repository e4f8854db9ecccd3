"""mkt-tag: open-vocabulary multi-label image tagging with MKT."""

__version__ = "0.1.0"
