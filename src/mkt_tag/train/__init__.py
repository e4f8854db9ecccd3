"""Training MKT on labelled images: ``train(TrainConfig(data=..., labels=..., out=...))``.

One module per concern: ``settings`` (TrainConfig, TOML, saved settings), ``job`` (the flow:
settings, data, run folder), ``trainer`` (the training loop), ``stages`` (what each stage
trains), ``losses``, ``labels`` (the label text, as `tag` and `eval` embed it), ``data``
(epoch order, augmentation), ``features`` (stage 2's cache), ``resume`` (resume points,
metrics.csv), ``distributed`` (torchrun).
"""

from mkt_tag.errors import UsageError
from mkt_tag.train.job import COMMAND_LINE, TrainResult, resolve_settings, train
from mkt_tag.train.settings import SettingsError, TrainConfig
from mkt_tag.train.trainer import Report

__all__ = [
    "COMMAND_LINE",
    "Report",
    "SettingsError",
    "TrainConfig",
    "TrainResult",
    "UsageError",
    "resolve_settings",
    "train",
]
