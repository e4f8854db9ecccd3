"""How image files reach the model: decoding, batching, parallel batches.

On a CPU the model works on several batches at once, each in its own thread with an equal
share of torch's threads: that thread decodes its batch, then runs the model on it. The
threads never wait for each other, so one batch's decoding fills the time another spends in
the model, and no forward pass stalls at a thread barrier behind a core that is busy
decoding. (On 2 cores: 4-6% more images per second than one batch at a time on both
threads, in paired rounds; docs/benchmarks.md.) On a GPU one batch at a time feeds the model
and worker processes decode.

Worker processes decode in chunks smaller than a batch (``decode_chunk``), so that every
worker has work from the first batch on: decoding whole batches, 48 photos in batches of 16
kept 3 of 8 workers busy and the first batch waited for 16 decodes in a row
(docs/benchmarks.md, "Feeding a GPU").
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TypeVar, cast

import torch

from mkt_tag.images import Decoded, ImageFiles

MAX_PARALLEL = 8  # batches at once: more only multiplies the memory they hold
MAX_WORKERS = 32  # decoding processes

Result = TypeVar("Result")


def usable_cpus() -> int:
    """CPUs this process may run on (affinity and container limits), not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_parallel(model_on_cpu: bool = True) -> int:
    """Batches at once: one per torch thread on a CPU (at most 8), one on a GPU."""
    return max(1, min(MAX_PARALLEL, torch.get_num_threads())) if model_on_cpu else 1


def default_workers(n_images: int, batch_size: int, model_on_cpu: bool = True) -> int:
    """Decoding processes: as many as there are cores the model leaves free (at most 32).

    Where torch's threads already use every core, a decoding process would only take cores
    from the model, so each batch's thread decodes it instead (``0``). With the model on a
    GPU, decoding is the work: seven cores of eight decode (the eighth feeds the GPU and
    writes the results; on 2 to 7 cores, all of them), and no more processes start than there
    are chunks to decode (``decode_chunk``). Also ``0`` for a handful of images, where
    starting processes costs more than it saves.
    """
    if n_images <= batch_size:
        return 0
    if model_on_cpu:
        free = usable_cpus() - torch.get_num_threads()
    else:
        cpus = usable_cpus()
        free = min(max(1, cpus - cpus // 8), -(-n_images // MIN_CHUNK))
    return max(0, min(MAX_WORKERS, free))


MIN_CHUNK = 2  # images a decoding process hands over at a time, at least


def decode_chunk(batch_size: int, workers: int) -> int:
    """Images per decoding task: a batch shared among the workers (at least ``MIN_CHUNK``),
    so that all of them decode the first batch together."""
    return max(MIN_CHUNK, -(-batch_size // max(1, workers)))


def plan_batches(n_images: int, batch_size: int, parallel: int = 1) -> list[range]:
    """Consecutive batches of at most ``batch_size`` images, sizes within one of each other.

    Their number is a multiple of ``parallel`` where there are enough images, so that the
    parallel batches finish together instead of one thread working alone on a short last one.
    """
    if n_images <= 0:
        return []
    count = -(-n_images // batch_size)
    count = min(n_images, -(-count // parallel) * parallel)
    bounds = [i * n_images // count for i in range(count + 1)]
    return [range(start, end) for start, end in itertools.pairwise(bounds)]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads (per calling thread), then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_batches(
    files: ImageFiles,
    plan: Sequence[range],
    work: Callable[[list[Decoded]], Result],
    parallel: int = 1,
    workers: int = 0,
    nice_workers: bool = True,
) -> Iterator[Result]:
    """``work(decoded batch)`` for every batch of ``plan``, yielded in plan order.

    ``parallel`` batches run at once, each in its own thread with an equal share of torch's
    threads (at least one); torch's setting is restored afterwards. With ``workers`` > 0 the
    batches are decoded in that many processes, in chunks (``decode_chunk``), niced with
    ``nice_workers`` (the model on a CPU comes first); otherwise each batch's thread decodes
    it with its share of threads (PIL releases the GIL) while the others run the model.
    """
    if parallel < 1 or workers < 0:
        raise ValueError(f"need parallel >= 1 and workers >= 0, got {parallel} and {workers}")
    per_batch = max(1, torch.get_num_threads() // parallel)
    local = threading.local()
    decoders: list[ThreadPoolExecutor] = []
    stopping = threading.Event()

    def decode(batch: range) -> list[Decoded]:
        if per_batch == 1:
            return [files[i] for i in batch]
        if not hasattr(local, "pool"):  # this batch thread's own decoding threads
            local.pool = ThreadPoolExecutor(per_batch, thread_name_prefix="mkt-decode")
            decoders.append(local.pool)
        return list(local.pool.map(files.__getitem__, batch))

    def run(batch: range | list[Decoded]) -> Result:
        items = batch if isinstance(batch, list) else decode(batch)
        if stopping.is_set():  # the caller has gone (Ctrl-C): spare it the forward pass
            raise CancelledError
        return work(items)

    source: Iterable[range | list[Decoded]] = (
        _decoded_in_processes(files, plan, workers, nice_workers) if workers else plan
    )
    threads = ThreadPoolExecutor(parallel, thread_name_prefix="mkt-batch")
    pending: deque[Future[Result]] = deque()
    try:
        with torch_threads(per_batch):
            for batch in source:
                pending.append(threads.submit(run, batch))
                if len(pending) > parallel:  # one queued behind the running ones: none idles
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:  # also on Ctrl-C or an abandoned generator: finish the running batches, drop the rest
        stopping.set()
        threads.shutdown(wait=True, cancel_futures=True)
        for pool in decoders:
            pool.shutdown()


def _decoded_in_processes(
    files: ImageFiles, plan: Sequence[range], workers: int, nice: bool
) -> Iterator[list[Decoded]]:
    """The batches of ``plan``, decoded by ``workers`` processes in chunks, in plan order."""
    longest = max(map(len, plan), default=1)
    size = decode_chunk(longest, workers)
    chunks = [list(batch[i : i + size]) for batch in plan for i in range(0, len(batch), size)]
    loader = torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Decoded]", files),  # map-style: len and getitem
        batch_sampler=chunks,
        num_workers=workers,
        collate_fn=_collate,
        # Two batches' worth of images decoded ahead by each worker, whatever the chunk size.
        prefetch_factor=max(2, -(-2 * longest // size)),
        worker_init_fn=_decoder_init if nice else None,
    )
    batches = iter(plan)
    batch, decoded = next(batches, None), []
    for chunk in loader:  # in order: chunks never straddle two batches
        decoded += chunk
        if batch is not None and len(decoded) == len(batch):
            yield decoded
            batch, decoded = next(batches, None), []


def _collate(items: list[Decoded]) -> list[Decoded]:
    return items


def _decoder_init(worker: int) -> None:
    # Decoding fills the gaps the model leaves: it never takes a core from the forward pass
    # on a CPU. (With the model on a GPU the decoders are the work, and are not niced.)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
