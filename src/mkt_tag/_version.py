"""The version of mkt-tag, defined here only (pyproject.toml and the CLI read it)."""

__version__ = "0.6.0"
