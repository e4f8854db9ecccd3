"""The Ray engine: a run's images tagged by Ray Data, on one machine or a Ray cluster.

``mkt-tag tag --engine ray`` hands ``job.run`` a :class:`RayEngine` instead of a local
``Tagger``. The run itself (what to skip, results journal, sidecars, resume) stays on the
driver; only the images go through Ray Data, in two stages:

    paths and URIs (blocks of one batch)
      -> decode: CPU tasks of one CPU each: objects in buckets fetched (``remote.fetched``),
         then ``ImageFiles`` (the decoding of a local run)
      -> model: a fixed pool of actors (``plan_actors``: one per GPU, or per group of CPUs),
         each loading the model once and running ``Tagger.score_decoded`` on every batch
      -> the driver: tags chosen (``select``) and failures named, as ``Tagger.tag_files``

Ray is imported here only, when a run has images to tag: ``import mkt_tag``, planning and a
run with nothing to do never import it. Paths are read where they are given, so on a
cluster they must be on a file system every node mounts. Images given as URIs (s3://,
gs://: ``remote.py``) are listed by the driver, which never downloads one: each decoding
task fetches its batch's objects itself, through pyarrow, with its node's credentials.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mkt_tag import hub, identity, published
from mkt_tag.config import PreprocessConfig, check_streams
from mkt_tag.errors import ImageLoadError, MktTagError, UsageError
from mkt_tag.images import ImageFiles
from mkt_tag.remote import ImagePath, fetched, image_ref
from mkt_tag.results import TagResult
from mkt_tag.tagging.selection import Selection, select
from mkt_tag.vocab import Entry

if TYPE_CHECKING:
    from types import ModuleType

RAY_MISSING = "the Ray engine needs Ray: pip install 'mkt-tag[ray]'"

# CPUs (torch threads) of each model actor on a cluster without GPUs; fewer on small nodes.
DEFAULT_CPUS_PER_ACTOR = 4

# Ray's loggers whose terminal output a run silences: a local instance started, each
# dataset's execution plan, warnings about progress bars, tracebacks of failed tasks.
_RAY_LOGGERS = ("ray", "ray.data")

# Ray Data's settings during a run (where the installed version has them): no progress bars,
# and a task's own exception raised rather than wrapped (its type and message, in one line).
_CONTEXT = {"enable_progress_bars": False, "raise_original_map_exception": True}


def check_job(workers: int | None, parallel: int | None, feature_cache: bool) -> None:
    """Refuse before any work what the engine cannot do (``UsageError``: the local engine's
    options), and a missing Ray (``MktTagError``)."""
    if workers is not None:
        raise UsageError("--workers: not with --engine ray (Ray's tasks decode the images)")
    if parallel is not None:
        raise UsageError("--parallel: not with --engine ray (Ray's actor pool runs the model)")
    if feature_cache:
        raise UsageError(
            "--feature-cache: not with --engine ray (the cache lives in one process's cache "
            "folder, the actors are spread over the cluster)"
        )
    try:  # found, not imported (that takes seconds)
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: a module without a spec
        found = False
    if not found:
        raise MktTagError(RAY_MISSING)


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors a run starts, and what each holds."""

    actors: int  # model replicas in the pool
    cpus: int  # CPUs each actor holds (its torch threads)
    gpus: float  # GPUs each actor holds (0: the model runs on CPUs)
    device: str  # the device each actor's Tagger runs on


def plan_actors(
    nodes: Sequence[tuple[float, float]],
    device: str = "auto",
    actors: int | None = None,
    cpus_per_actor: int | None = None,
    gpus_per_actor: float = 1.0,
) -> ActorPlan:
    """The model actors for a cluster whose alive nodes have ``nodes`` (CPUs, GPUs) each.

    With GPUs (``device`` auto or cuda): one actor per ``gpus_per_actor`` GPUs, each with
    ``cpus_per_actor`` CPUs (default 1). Without: actors of ``cpus_per_actor`` CPUs (default
    ``DEFAULT_CPUS_PER_ACTOR``, at most one less than the largest node has), each node taking
    ``cpus // (cpus_per_actor + 1)``: one CPU of every group is left to the decoding tasks.
    A plan leaving no CPU to decode is refused (``MktTagError``), as is ``--device cuda``
    without a GPU: Ray would never schedule a decoding task, and the run would hang.
    """
    cpus = [int(node_cpus) for node_cpus, _ in nodes]
    gpus = [node_gpus for _, node_gpus in nodes]
    if device == "cuda" and sum(gpus) == 0:
        raise MktTagError("--device cuda: the Ray cluster has no GPU")
    if device in ("auto", "cuda") and sum(gpus) > 0:
        threads = cpus_per_actor or 1
        count = actors or max(1, sum(int(g / gpus_per_actor) for g in gpus))
        plan = ActorPlan(count, threads, gpus_per_actor, "cuda")
    else:
        threads = cpus_per_actor or max(1, min(DEFAULT_CPUS_PER_ACTOR, max(cpus, default=1) - 1))
        count = actors or max(1, sum(c // (threads + 1) for c in cpus))
        plan = ActorPlan(count, threads, 0.0, "cpu" if device == "auto" else device)
    if sum(cpus) - plan.actors * plan.cpus < 1:
        raise MktTagError(
            f"no CPU left to decode on a Ray cluster of {sum(cpus)} CPUs: the model takes "
            f"{plan.actors} x {plan.cpus} (actors x CPUs); ask for fewer actors or CPUs per actor"
        )
    return plan


@dataclass(frozen=True)
class RayEngine:
    """Tags files on Ray (see the module's docstring): picklable settings, no model here.

    >>> engine = RayEngine("ViT-B-16:openai", read_labels("labels.txt").entries)
    >>> job.run(TagJob([Path("/mnt/photos")], Selection(top_k=5), output=...), engine)
    """

    model: str  # model id or checkpoint folder, loaded by each actor
    entries: Sequence[Entry]  # the vocabulary (kept as a tuple)
    device: str = "auto"  # auto: one actor per GPU where the cluster has GPUs, else CPUs
    precision: str = "auto"  # of each actor's model
    cache_dir: str | Path | None = None  # None: each node's ($MKT_TAG_CACHE or the user's)
    streams: str | None = None  # overrides the model's scores (``ModelConfig.streams``)
    address: str | None = None  # None: Ray's rule (RAY_ADDRESS, `ray start`, else local)
    actors: int | None = None  # model actors (None: ``plan_actors``)
    cpus_per_actor: int | None = None  # CPUs (torch threads) per actor (None: automatic)
    gpus_per_actor: float = 1.0  # GPUs per actor where there are GPUs (0.5: two per GPU)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))

    def tag_files(
        self, paths: Sequence[ImagePath], selection: Selection, batch_size: int = 16
    ) -> Iterator[TagResult | ImageLoadError]:
        """One TagResult or ImageLoadError per path or URI, as batches finish. The model's
        files are found here first (a missing model fails before Ray starts); then Ray is
        joined, or started (and shut down at the end), unless this process has it running.

        Raises:
            MktTagError: Ray missing or unreachable, an actor that cannot load the model, a
                failed Ray task: one line each.
        """
        paths = list(paths)
        if not paths:
            return
        root = hub.cache_dir(self.cache_dir)
        preprocess = identity.resolve(published.locate(self.model, root), root).config.preprocess
        if self.streams is not None:
            check_streams(self.streams)
        ray = _import_ray()
        with _connected(ray, self.address), _quiet(ray):
            knobs = (self.actors, self.cpus_per_actor, self.gpus_per_actor)
            resources = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
            nodes = [(node.get("CPU", 0.0), node.get("GPU", 0.0)) for node in resources]
            plan = plan_actors(nodes, self.device, *knobs)
            dataset = self._dataset(ray, paths, preprocess, plan, batch_size)
            labels = [entry.label for entry in self.entries]  # as ``LabelSet.labels``
            for batch in _batches(dataset):
                if failure := str(batch["fatal"][0]) if len(batch["fatal"]) else "":
                    raise MktTagError(f"the Ray engine's model actor failed: {failure}")
                failed = batch["error"] != ""
                good = np.flatnonzero(~failed)
                chosen = select(batch["scores"][good], labels, selection)
                for row, tags in zip(good, chosen, strict=True):
                    yield TagResult(paths[int(batch["index"][row])], tags)
                for row in np.flatnonzero(failed):
                    index = int(batch["index"][row])
                    yield ImageLoadError(str(paths[index]), str(batch["error"][row]))

    def _dataset(
        self,
        ray: ModuleType,
        paths: list[ImagePath],
        preprocess: PreprocessConfig,
        plan: ActorPlan,
        batch_size: int,
    ) -> Any:
        # Absolute paths (images, model, cache): a worker's current folder is not the driver's.
        items = [
            {"index": i, "path": str(path.absolute() if isinstance(path, Path) else path)}
            for i, path in enumerate(paths)
        ]
        # One block per batch: a decoding task then holds one batch of pixels, not thousands.
        blocks = math.ceil(len(items) / batch_size)
        cache = None if self.cache_dir is None else Path(self.cache_dir).expanduser().absolute()
        actor = replace(self, model=_absolute_model(self.model), cache_dir=cache)
        return (
            ray.data.from_items(items, override_num_blocks=blocks)
            .map_batches(
                _decode,
                batch_size=batch_size,
                batch_format="numpy",
                fn_kwargs={"preprocess": preprocess},
                num_cpus=1,
                # Ray's default for CPU tasks (a worker serves any number of them), said
                # here so that the stages' remote arguments differ: Ray would otherwise fuse
                # the decoding into the model actors, leaving the CPUs kept for it idle.
                max_calls=0,
            )
            .map_batches(
                _ModelActor,
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                fn_constructor_kwargs={"engine": actor, "plan": plan},
                num_cpus=plan.cpus,
                num_gpus=plan.gpus or None,
            )
        )


def _decode(batch: dict[str, np.ndarray], preprocess: PreprocessConfig) -> dict[str, np.ndarray]:
    """The decoding stage: a batch of paths and URIs as pixels (zeros where an image failed)
    and the reason of each failure ("" where none). Objects are fetched here, on the node
    that decodes them, into temporary files decoded as local files are."""
    size = preprocess.image_size
    pixels = np.zeros((len(batch["path"]), size, size, 3), np.uint8)
    errors = []
    with fetched([image_ref(str(path)) for path in batch["path"]]) as files:
        local = ImageFiles(
            [file if isinstance(file, Path) else Path() for file in files], preprocess
        )
        for position, file in enumerate(files):
            _, array, reason = local[position] if isinstance(file, Path) else (0, None, file)
            if array is not None:
                pixels[position] = array
            errors.append("" if array is not None else reason or "cannot read")
    return {**batch, "pixels": pixels, "error": np.array(errors, dtype=str)}


class _ModelActor:
    """The model stage: one model loaded per actor, scoring each decoded batch. A model that
    cannot load is said in every batch's ``fatal`` column, for the driver to make one line
    of it: raised here, Ray would log tracebacks and start replacements."""

    def __init__(self, engine: RayEngine, plan: ActorPlan) -> None:
        self.failure = ""
        self.width = len(engine.entries)
        try:
            import torch

            from mkt_tag.tagging.tagger import Tagger

            torch.set_num_threads(plan.cpus)
            where = (plan.device, engine.precision, engine.cache_dir)
            self.tagger = Tagger.load(engine.model, *where, streams=engine.streams)
            self.labelset = self.tagger.embed_labels(list(engine.entries))
        except MktTagError as error:
            self.failure = str(error)
        except Exception as error:  # CUDA out of memory, a broken install: still one line
            self.failure = f"{type(error).__name__}: {error}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["index"])
        scores = np.zeros((count, self.width), np.float32)
        errors = np.array(batch["error"], dtype=object)
        if not self.failure:
            paths = [Path(path) for path in batch["path"]]
            items = [
                (i, None if errors[i] else batch["pixels"][i], errors[i] or None)
                for i in range(count)
            ]
            scored, _ = self.tagger.score_decoded(items, paths, self.labelset)
            scores[scored.indices] = scored.scores
            where = {str(path): i for i, path in enumerate(paths)}
            for failure in scored.failed:
                errors[where[str(failure.path)]] = failure.reason
        return {
            "index": batch["index"],
            "scores": scores,
            "error": errors.astype(str),
            "fatal": np.array([self.failure] * count, dtype=str),
        }


def _import_ray() -> ModuleType:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MktTagError(RAY_MISSING) from None
    return ray


def _absolute_model(model: str) -> str:
    """The model id with a local path made absolute (an actor's current folder differs)."""
    prefix = "local-dir:" if model.startswith("local-dir:") else ""
    path = Path(model[len(prefix) :]).expanduser()
    return prefix + str(path.absolute()) if prefix or path.exists() else model


def _batches(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The model stage's output blocks; a failed Ray task or actor as one line."""
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as error:  # RayTaskError, RayActorError, ObjectLostError, ...
            raise MktTagError(f"the Ray run failed: {_one_line(error)}") from None
        yield batch


@contextmanager
def _connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Ray initialised for the run: the instance already running in this process, or one
    joined or started here (and shut down at the end, however the run ends)."""
    if ray.is_initialized():
        yield
        return
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(
            address=address,
            include_dashboard=False,  # nobody looks at it during a tagging run
            log_to_driver=False,  # the workers' output stays in Ray's log files
            logging_level=logging.ERROR,  # "Started a local Ray instance." and such
        )
    except Exception as error:  # ConnectionError, a bad address, a broken install
        where = f" at {address}" if address else ""
        raise MktTagError(f"cannot start or reach Ray{where}: {_one_line(error)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """A cluster's address (host:port) that nothing answers at, as one line at once: Ray
    itself would retry for minutes. Other addresses (auto, local, ray://) are Ray's to try."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise MktTagError(f"cannot reach Ray at {address}: {error.strerror or error}") from None


@contextmanager
def _quiet(ray: ModuleType) -> Iterator[None]:
    """No progress bars, nothing from Ray's loggers on the terminal (their files keep it all;
    what fails reaches the user as one line, ``_batches``) during the run; then as before."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in _CONTEXT if hasattr(context, name)}
    handlers = [handler for name in _RAY_LOGGERS for handler in logging.getLogger(name).handlers]
    consoles = {  # handler -> its level; the file handlers keep theirs
        handler: handler.level
        for handler in handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    }
    for name in saved:
        setattr(context, name, _CONTEXT[name])
    for handler in consoles:
        handler.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for handler, level in consoles.items():
            handler.setLevel(level)


def _one_line(error: BaseException) -> str:
    """The innermost cause of a Ray error as one line, "ValueError: ...", without Ray's
    traceback (``RayTaskError.cause`` is the exception raised in the task)."""
    while (inner := getattr(error, "cause", None) or error.__cause__) not in (None, error):
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
