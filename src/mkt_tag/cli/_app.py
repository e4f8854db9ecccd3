"""The Typer app, its consoles, and what every command shares.

The CLI parses, calls the library and prints. It imports torch only inside commands (the
choice lists come from torch-free modules), so that `mkt-tag --help` answers at once.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from mkt_tag._version import __version__
from mkt_tag.config import Streams
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_ERROR

app = typer.Typer(
    name="mkt-tag",
    help="Open-vocabulary image tagging with MKT: tag your photos with your own words.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

# No console markup: what is printed holds paths, labels and reasons, whose brackets
# ("photos/[trip]/a.jpg", "pip install 'mkt-tag[onnx]'") are text. Styles go through Text.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)

CACHE_HELP = "Model cache folder [default: $MKT_TAG_CACHE or the user cache folder]."
MODEL_HELP = "Checkpoint folder or backbone id (see `mkt-tag models`)."


# Options several commands share, declared once.
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Decoding processes [default: on a GPU, 7 cores of 8 (all on 2-7 cores); on a "
        "CPU the cores torch leaves free, at most 32; 0: each batch is decoded by the thread "
        "that runs it, the default where torch uses every core].",
    ),
]


class Engine(str, Enum):
    """Where ``tag`` runs the model: in this process, or on Ray (``tagging.ray_engine``)."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: this process; ray: Ray Data, one model per GPU or group of CPUs, on this "
        "machine or a Ray cluster (needs the ray extra; see docs/scaling.md).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="With --engine ray: the Ray cluster to join [default: $RAY_ADDRESS, else one "
        "`ray start` began on this machine, else a new local instance].",
    ),
]
ParallelOption = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        help="Batches the model works on at once, each with an equal share of torch's "
        "threads [default: one per thread on a CPU, at most 8; 1 on a GPU].",
    ),
]
DeviceOption = Annotated[
    Device, typer.Option("--device", help="Where the model runs (auto: cuda, else mps, else cpu).")
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="int8: the image model in ONNX Runtime with int8 weights, on CPUs (the onnx "
        "extra). auto: on GPUs bf16 (else fp16); on CPUs int8 where the onnx extra is "
        "installed (or bf16 where it is native and measured faster here), else bf16 where "
        "native, else fp32. --verbose and the summary say which ran.",
    ),
]
CacheDirOption = Annotated[Path | None, typer.Option("--cache-dir", help=CACHE_HELP)]


class Sidecar(str, Enum):
    """Sidecar formats (``tag --sidecar``, ``review --apply --sidecar``)."""

    json = "json"
    txt = "txt"
    xmp = "xmp"


class Naming(str, Enum):
    """How a sidecar is named: ``full`` photo.jpg.xmp, ``stem`` photo.xmp."""

    full = "full"
    stem = "stem"


StreamsOption = Annotated[
    Streams | None,
    typer.Option(
        "--streams",
        help="Scores used: both (MKT's two streams), global (class token) or local (patches) "
        "alone [the model's: both once trained with MKT, global for a plain backbone].",
    ),
]
RecursiveOption = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")
]


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one error line on stderr; return the Exit to raise."""
    err.print(Text(f"error: {message}", style="red"))
    return typer.Exit(code)


def warn(message: str) -> None:
    err.print(Text(f"warning: {message}", style="yellow"))


def _version(value: bool) -> None:
    if value:
        out.print(f"mkt-tag {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Open-vocabulary image tagging with MKT: tag your photos with your own words."""
