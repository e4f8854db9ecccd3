"""The Python API: load a model, tag images with any labels.

>>> from mkt_tag import Tagger
>>> tagger = Tagger.load("ViT-B-16:openai")
>>> tagger.tag(["photo.jpg"], ["dog", "beach", "sunset"], top_k=2)
[TagResult(path=PosixPath('photo.jpg'), tags=[Tag(label='beach', score=0.11), ...])]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mkt_tag import auto_precision, checkpoints, hub, published
from mkt_tag.config import DEFAULT_BACKBONE, PreprocessConfig, check_streams
from mkt_tag.devices import pick_device, pick_dtype
from mkt_tag.errors import ImageLoadError
from mkt_tag.files import digest
from mkt_tag.identity import scores_fingerprint
from mkt_tag.images import Decoded, ImageFiles, load_image, prepare
from mkt_tag.model import MKT, ImageFeatures, fuse, normalise_pixels
from mkt_tag.results import TagResult
from mkt_tag.tagging.batches import default_parallel, default_workers, plan_batches, run_batches
from mkt_tag.tagging.caches import FeatureCache, LabelCache, open_caches
from mkt_tag.tagging.label_embeddings import LabelSet, embed
from mkt_tag.tagging.selection import Selection, select
from mkt_tag.vocab import Entry

# Features are scored in chunks of exactly this many images (the last one padded): a matrix
# product's rounding can depend on its number of rows, so an image's scores would otherwise
# depend on which images share its batch (cached ones, or a batch plan of other sizes).
SCORE_ROWS = 8
# Label candidates are scored in blocks of exactly this many (the last one padded), for the
# same reason: a label's raw stream scores then do not depend on which other labels are
# scored with it, so `mkt-tag eval` can fuse them again over some of the labels and get what
# a vocabulary of those labels alone gives, bit for bit.
SCORE_COLUMNS = 64


@dataclass
class ScoredBatch:
    """One batch of ``Tagger.score_files``: which paths were scored, their scores, failures."""

    indices: list[int]  # positions in the paths given
    scores: np.ndarray  # len(indices) x labels
    failed: list[ImageLoadError]
    # With ``score_files(streams=True)``: each stream's raw scores, len(indices) x candidates
    # (``LabelSet.owner`` says whose), before normalisation and fusion; else None.
    global_scores: np.ndarray | None = None
    local_scores: np.ndarray | None = None


class Tagger:
    """An MKT model on a device, ready to score images against any labels."""

    def __init__(
        self,
        model: MKT,
        device: str = "auto",
        precision: str = "auto",
        label_cache: LabelCache | None = None,
        feature_cache: FeatureCache | None = None,
        onnx_cache: Path | None = None,
    ) -> None:
        self.device = pick_device(device)
        # What runs, and why (auto may measure; an unknown precision, or int8 off the CPU, is
        # refused), and with int8 ONNX Runtime's image tower
        # (kept in ``onnx_cache``), on as many threads per call as torch's (a batch's share:
        # ``batches.run_batches``).
        self.precision, self._onnx = auto_precision.prepare(
            precision, self.device, model, onnx_cache
        )
        self.dtype = pick_dtype(self.precision.value, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        pre = model.config.preprocess
        # Caches only work for models whose weights are known by a fingerprint.
        known = bool(model.fingerprint)
        self.label_cache = label_cache if known else None
        self.feature_cache = feature_cache if known else None
        where = ["int8" if self._onnx else str(self.dtype), self.device.type]
        prompt = [t.detach().float().cpu().numpy().tobytes() for t in model.prompt.parameters()]
        self.text_key = digest(model.fingerprint, "text", model.config.template, *prompt, *where)
        self.image_key = digest(model.fingerprint, "image", dataclasses.asdict(pre), *where)

    @property
    def scores_fingerprint(self) -> str:
        """What the scores depend on: the weights and the configuration (template, streams,
        top-K patches...), not device or precision; "" when the weights are unknown. A
        thresholds file records it (``mkt-tag eval --calibrate``) to be checked by ``tag``."""
        return scores_fingerprint(self.model.fingerprint, self.model.config)

    def report_cache_warnings(self, on_warning: Callable[[str], None]) -> None:
        """Pass the caches' warnings so far to ``on_warning``, and each later one as it arises
        (a damaged entry found, a failed write while tagging)."""
        for cache in (self.label_cache, self.feature_cache):
            if cache is not None:
                cache.report_to(on_warning)

    @classmethod
    def load(
        cls,
        model: str | Path = DEFAULT_BACKBONE,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: str | Path | None = None,
        download: bool = True,
        feature_cache: bool = False,
        streams: str | None = None,
    ) -> Tagger:
        """Load a checkpoint directory or backbone id (``ViT-B-16:openai``, ``hf-hub:...``).

        Label embeddings are cached in the cache folder; image features too with
        ``feature_cache`` (about 200 KB per image for ViT-B/16). ``streams`` overrides the
        scores the model uses (``ModelConfig.streams``: both, global or local).
        """
        root = hub.cache_dir(cache_dir)
        labels, features = open_caches(root, feature_cache)
        loaded = checkpoints.load(published.locate(model, root, download), root, download)
        if streams is not None:
            loaded.config.streams = check_streams(streams)
        return cls(loaded, device, precision, labels, features, onnx_cache=root)

    @property
    def image_tower(self) -> Callable[[torch.Tensor], ImageFeatures]:
        """What turns normalised pixels into image features: the model's ``encode_images``,
        or with ``precision="int8"`` the ONNX Runtime session (``onnx_tower.OnnxTower``)."""
        return self._onnx or self.model.encode_images

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.model.config.preprocess

    def embed_labels(self, labels: Sequence[str | Entry], source: str = "labels") -> LabelSet:
        """Encode labels (or vocabulary entries) once; reuse the result for many images."""
        return embed(self.model, labels, self.label_cache, self.text_key, source)

    def _as_labelset(self, labels: Sequence[str] | LabelSet) -> LabelSet:
        return labels if isinstance(labels, LabelSet) else self.embed_labels(labels)

    def score_arrays(self, arrays: Sequence[np.ndarray], labels: LabelSet) -> np.ndarray:
        """Per-label scores (N x L) for preprocessed uint8 images."""
        return self._forward(arrays, labels)[0].scores

    @torch.inference_mode()
    def _forward(
        self, arrays: Sequence[np.ndarray], labels: LabelSet, streams: bool = False
    ) -> tuple[ScoredBatch, np.ndarray | None]:
        """Scores (a batch without indices; each stream's too with ``streams``), and with the
        feature cache on the float16 features to store in it.

        Features are rounded to float16, as the feature cache stores them, and scored as
        rounded whether the cache is on or not: a run filling the cache, one reading it and
        one without it give the same scores, bit for bit. Safe to call from several threads.
        """
        batch = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2)
        batch = normalise_pixels(batch, self.preprocess, self.dtype)
        features = self.image_tower(batch)
        tokens = torch.cat([features.global_[:, None], features.patches], dim=1)
        tokens = tokens.to(torch.float16)
        rows = tokens.cpu().numpy() if self.feature_cache is not None else None
        return self._score_tokens(tokens, labels, streams), rows

    @torch.inference_mode()
    def score_features(self, features: ImageFeatures, labels: LabelSet) -> np.ndarray:
        """Per-label scores (N x L) from projected image features."""
        return self._label_scores(*self._stream_scores(features, labels), labels)

    def _label_scores(
        self, global_scores: torch.Tensor, local: torch.Tensor, labels: LabelSet
    ) -> np.ndarray:
        """MKT's fusion over every candidate of ``labels``, then each label's best candidate."""
        candidates = fuse(global_scores, local, self.model.config.streams)
        return labels.label_scores(candidates.float().cpu().numpy())

    def _stream_scores(
        self, features: ImageFeatures, labels: LabelSet
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's raw scores (N x candidates), candidates in blocks of exactly
        ``SCORE_COLUMNS``."""
        global_scores, local = [], []
        for start in range(0, len(labels.embeddings), SCORE_COLUMNS):
            block = labels.embeddings[start : start + SCORE_COLUMNS]
            columns = len(block)
            if columns < SCORE_COLUMNS:
                block = torch.cat([block, block.new_zeros(SCORE_COLUMNS - columns, block.shape[1])])
            scores = self.model.score(features, block)
            global_scores.append(scores.global_[:, :columns])
            local.append(scores.local[:, :columns])
        if not global_scores:  # no label
            empty = features.global_.new_zeros((len(features.global_), 0))
            return empty, empty
        return torch.cat(global_scores, dim=1), torch.cat(local, dim=1)

    def _score_cached(
        self, tokens: Sequence[np.ndarray], labels: LabelSet, streams: bool = False
    ) -> ScoredBatch:
        stacked = torch.from_numpy(np.stack(tokens)).to(self.device)
        return self._score_tokens(stacked, labels, streams)

    @torch.inference_mode()
    def _score_tokens(
        self, tokens: torch.Tensor, labels: LabelSet, streams: bool = False
    ) -> ScoredBatch:
        """Scores of float16 tokens (N x (1 + patches) x D), in chunks of ``SCORE_ROWS``; with
        ``streams``, each stream's raw scores too. The batch has no indices yet."""
        scores, global_scores, local = [], [], []
        for start in range(0, len(tokens), SCORE_ROWS):
            chunk = tokens[start : start + SCORE_ROWS].float()
            rows = len(chunk)
            if rows < SCORE_ROWS:
                chunk = torch.cat([chunk, chunk.new_zeros(SCORE_ROWS - rows, *chunk.shape[1:])])
            features = ImageFeatures(chunk[:, 0], chunk[:, 1:])
            chunk_global, chunk_local = self._stream_scores(features, labels)
            scores.append(self._label_scores(chunk_global, chunk_local, labels)[:rows])
            if streams:
                global_scores.append(chunk_global[:rows].float().cpu().numpy())
                local.append(chunk_local[:rows].float().cpu().numpy())
        batch = ScoredBatch([], _rows(scores, len(labels.labels)), [])
        if streams:
            batch.global_scores = _rows(global_scores, len(labels.owner))
            batch.local_scores = _rows(local, len(labels.owner))
        return batch

    def scores(
        self,
        images: Sequence[Image.Image | str | Path],
        labels: Sequence[str] | LabelSet,
        batch_size: int = 16,
    ) -> np.ndarray:
        """Per-label scores (N x L) for PIL images or paths; a bad path raises ImageLoadError.

        A list of paths alone takes ``score_files`` (parallel batches), as the CLI does.
        """
        labelset = self._as_labelset(labels)
        paths = [Path(im) for im in images if not isinstance(im, Image.Image)]
        if images and len(paths) == len(images):
            return self._score_paths(paths, labelset, batch_size)
        min_side = 2 * self.preprocess.resize
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [
                im if isinstance(im, Image.Image) else load_image(Path(im), min_side)
                for im in images[start : start + batch_size]
            ]
            out.append(self.score_arrays([prepare(im, self.preprocess) for im in chunk], labelset))
        return np.concatenate(out) if out else np.zeros((0, len(labelset.labels)), np.float32)

    def _score_paths(self, paths: list[Path], labels: LabelSet, batch_size: int) -> np.ndarray:
        """``scores`` for files through the CLI's pipeline; the first bad file is raised."""
        out = np.zeros((len(paths), len(labels.labels)), np.float32)
        for batch in self.score_files(paths, labels, batch_size):
            if batch.failed:
                raise batch.failed[0]
            out[batch.indices] = batch.scores
        return out

    def tag(
        self,
        images: Sequence[Image.Image | str | Path],
        labels: Sequence[str] | LabelSet,
        top_k: int | None = 5,
        threshold: float | None = None,
    ) -> list[TagResult]:
        """Tags for each image (paths or PIL images; a PIL image gets the path "<image N>")."""
        labelset = self._as_labelset(labels)
        scores = self.scores(images, labelset)
        tags = select(scores, labelset.labels, Selection(top_k, threshold))
        return [
            TagResult(Path(im) if not isinstance(im, Image.Image) else Path(f"<image {i}>"), t)
            for i, (im, t) in enumerate(zip(images, tags, strict=True))
        ]

    def score_files(
        self,
        paths: Sequence[Path],
        labels: LabelSet,
        batch_size: int = 16,
        workers: int | None = None,
        parallel: int | None = None,
        streams: bool = False,
    ) -> Iterator[ScoredBatch]:
        """Score files batch by batch, in order; a bad file never stops the run.

        ``parallel`` batches run at once (default: ``default_parallel``), each decoded by
        its own thread or by ``workers`` processes (default: ``default_workers``); see
        ``mkt_tag.tagging.batches``. Images in the feature cache come first and skip decoding and
        the image model. Every path appears in exactly one batch, scored or failed. With
        ``streams``, each batch also holds each stream's raw scores per label candidate.
        """
        cached = self.feature_cache.get(self.image_key, paths) if self.feature_cache else {}
        hits = sorted(cached)
        for start in range(0, len(hits), batch_size):
            chunk = hits[start : start + batch_size]
            batch = self._score_cached([cached[i] for i in chunk], labels, streams)
            batch.indices = chunk
            yield _finite_only(batch, None, paths)[0]
        todo = [index for index in range(len(paths)) if index not in cached]
        if not todo:
            return
        on_cpu = self.device.type == "cpu"
        parallel = default_parallel(on_cpu) if parallel is None else parallel
        workers = default_workers(len(todo), batch_size, on_cpu) if workers is None else workers
        files = ImageFiles([paths[i] for i in todo], self.preprocess)

        def score(items: list[Decoded]) -> tuple[ScoredBatch, np.ndarray | None]:
            positions = [(todo[i], array, reason) for i, array, reason in items]
            return self.score_decoded(positions, paths, labels, streams)

        plan = plan_batches(len(todo), batch_size, parallel)
        for batch, tokens in run_batches(files, plan, score, parallel, workers, on_cpu):
            if tokens is not None and self.feature_cache is not None:  # sqlite: this thread only
                scored = [paths[i] for i in batch.indices]
                self.feature_cache.put(self.image_key, zip(scored, tokens, strict=True))
            yield batch

    def score_decoded(
        self,
        items: Sequence[Decoded],
        paths: Sequence[Path],
        labels: LabelSet,
        streams: bool = False,
    ) -> tuple[ScoredBatch, np.ndarray | None]:
        """One batch of decoded files (``ImageFiles`` items whose positions index ``paths``):
        the scores of those decoded, a failure for each of the others, and with the feature
        cache on the float16 features to store. Images whose scores are not finite become
        failures (see ``_finite_only``). What ``score_files`` and the Ray engine's model
        actors run on each batch."""
        good = [(index, array) for index, array, _ in items if array is not None]
        failed = [
            ImageLoadError(paths[index], reason or "cannot read")
            for index, array, reason in items
            if array is None
        ]
        if good:
            batch, tokens = self._forward([array for _, array in good], labels, streams)
        else:  # every image failed: an empty batch of the right widths
            batch, tokens = self._score_tokens(torch.zeros(0), labels, streams), None
        batch.indices, batch.failed = [index for index, _ in good], failed
        return _finite_only(batch, tokens, paths)

    def tag_files(
        self,
        paths: Sequence[Path],
        labels: LabelSet,
        selection: Selection,
        batch_size: int = 16,
        workers: int | None = None,
        parallel: int | None = None,
    ) -> Iterator[TagResult | ImageLoadError]:
        """Tag files (see ``score_files``): one TagResult or ImageLoadError per path."""
        for batch in self.score_files(paths, labels, batch_size, workers, parallel):
            yield from batch.failed
            chosen = select(batch.scores, labels.labels, selection)
            for index, image_tags in zip(batch.indices, chosen, strict=True):
                yield TagResult(paths[index], image_tags)


def _finite_only(
    batch: ScoredBatch, tokens: np.ndarray | None, paths: Sequence[Path]
) -> tuple[ScoredBatch, np.ndarray | None]:
    """``batch`` without the images whose scores are not all finite numbers, which become
    failures (an image with NaN scores would get no tag, and count as done); their features
    are not cached. A model refused at load cannot get here: an fp16 overflow can."""
    finite = np.isfinite(batch.scores).all(axis=1)
    if finite.all():
        return batch, tokens
    failed = [
        ImageLoadError(
            paths[index],
            "the model's scores for it are not numbers (NaN or infinite): an overflow in "
            "fp16/bf16? try --precision fp32",
        )
        for index, ok in zip(batch.indices, finite, strict=True)
        if not ok
    ]
    kept = ScoredBatch(
        [index for index, ok in zip(batch.indices, finite, strict=True) if ok],
        batch.scores[finite],
        batch.failed + failed,
        None if batch.global_scores is None else batch.global_scores[finite],
        None if batch.local_scores is None else batch.local_scores[finite],
    )
    return kept, tokens[finite] if tokens is not None else None


def _rows(parts: list[np.ndarray], columns: int) -> np.ndarray:
    """Row blocks stacked; no block: 0 rows of ``columns``."""
    return np.concatenate(parts) if parts else np.zeros((0, columns), np.float32)
