"""MKT training: stage 1 (vision side, ranking + distillation), stage 2 (prompt tuning).

The loop reads top to bottom. The learning rate is a pure function of the step. Every random
choice derives from (seed, epoch, index), so a run resumed from its last saved step, or split
over processes by torchrun, ends with the same weights as one uninterrupted process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from mkt_tag import checkpoints
from mkt_tag.datasets import LabelledImages
from mkt_tag.devices import pick_device
from mkt_tag.model import normalise_pixels
from mkt_tag.train import distributed
from mkt_tag.train import features as train_features
from mkt_tag.train import resume as run_state
from mkt_tag.train.data import AugmentedImages, EpochSampler, FeatureRows
from mkt_tag.train.labels import LabelTexts, plain_entries
from mkt_tag.train.losses import distillation_loss, global_mean, ranking_loss
from mkt_tag.train.resume import ResumeState
from mkt_tag.train.settings import CONFIG_FILE, TrainConfig
from mkt_tag.train.stages import (
    Losses,
    Stage1Net,
    Stage2Net,
    StagePlan,
    Teacher,
    learning_rate,
    load_model,
    stage1_parameter_groups,
    trainable_names,
)
from mkt_tag.vocab import Entry

Report = Callable[..., None]  # report(event, **details): progress for the CLI


class StopTraining(Exception):
    """Raised internally when ``max_steps`` is reached (the run is resumable from there)."""


class Trainer:
    """Runs the MKT stages of a TrainConfig, writing everything into ``config.out``.

    ``entries`` (the vocabulary's, for ``train.labels`` in order) give each label's
    phrasings and aliases, embedded as `tag` and `eval` embed them; without them each label
    is its own text.

    Events passed to ``report``: ``epoch_start``, ``step``, ``epoch_end`` (a metrics row),
    ``features_start``/``features_step``, ``bad_images``, ``stage_done``, ``stopped``.
    """

    def __init__(
        self,
        config: TrainConfig,
        train: LabelledImages,
        val: LabelledImages,
        report: Report | None = None,
        entries: Sequence[Entry] | None = None,
    ) -> None:
        self.config = config
        self.train_data = train
        self.val_data = val
        self.report = report or (lambda event, **details: None)
        self.run_dir = Path(config.out)
        self.stages = config.stages
        self.group = distributed.setup(pick_device(config.device))
        self.device = self.group.device  # under torchrun on GPUs: this process's GPU
        self.model = load_model(config).to(self.device)
        self.labels = LabelTexts(plain_entries(train.labels) if entries is None else entries)
        if self.labels.labels != train.labels:
            raise ValueError("entries must be those of the training labels, in their order")
        # Texts too long for the text context fail here, at once.
        self.text_tokens = self.model.tokenize(self.labels.texts, config.labels)
        # What differs from the backbone before training: kept in every delta checkpoint.
        self.base_names = checkpoints.stored_tensor_names(config.model)
        self.teacher: Teacher | None = None
        self.frozen_weights = ""  # fingerprint of the vision side, frozen in stage 2
        if 1 in self.stages:
            self.teacher = Teacher(self.model.visual, config.trainable_blocks).to(self.device)
        self.state = ResumeState(stage=self.stages[0])
        saved = run_state.load(self.run_dir) if self.run_dir.is_dir() else None
        if saved is not None:
            self.state, tensors = saved
            self.model.load_state_dict(tensors, strict=False)
            if 2 in self.state.done or self.state.stage == 2:
                self.model.config.prompt_context = True
        if self.group.main and self.run_dir.is_dir():
            run_state.trim_metrics(self.run_dir, self.state)
        amp_fp16 = config.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_fp16)

    # --- the run --------------------------------------------------------------------------

    def run(self) -> ResumeState:
        """Train the configured stages; ``best/`` and ``last/`` checkpoints land in the run."""
        if self.group.main and not (self.run_dir / CONFIG_FILE).exists():  # not on resume
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir)
        try:
            for stage in self.stages:
                if stage in self.state.done:
                    continue
                if self.state.stage != stage:
                    self.state = self.state.next_stage(stage)
                plan = self._stage1_plan() if stage == 1 else self._stage2_plan()
                for epoch in range(self.state.epoch, plan.epochs):
                    statistics = self._epoch(plan, epoch)
                    self._end_epoch(plan, epoch, statistics, self._validate(stage))
                self.state.done.append(stage)
                self._save_state(None)  # the finished stage is recorded as done
                self.report("stage_done", stage=stage)
        except StopTraining:
            self.report("stopped", step=self.state.total_steps)
        finally:
            distributed.teardown(self.group)
        return self.state

    def _stage1_plan(self) -> StagePlan:
        """The vision side: top blocks with layer-wise lr decay, ranking + distillation."""
        config, model = self.config, self.model
        assert self.teacher is not None
        model.requires_grad_(False)
        groups = stage1_parameter_groups(model, config)  # each with its "lr_scale"
        for group in groups:
            for parameter in group["params"]:
                parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        self._load_optimizer(optimizer)
        with torch.no_grad():
            texts = model.prompt.encode(model.clip, self.text_tokens).float()
            candidates = self.labels.embeddings(texts)
        net = distributed.parallel(Stage1Net(model, self.teacher, self.labels), self.group)
        data = self.train_data
        dataset = AugmentedImages(
            data.paths, data.targets, model.config.preprocess, config.seed, config.augment
        )
        sampler = EpochSampler(
            len(dataset), config.seed, config.batch_size, self.group.rank, self.group.world
        )
        per_epoch = math.ceil(sampler.batches_per_epoch() / config.grad_accum)
        total, warmup = per_epoch * config.epochs, per_epoch * config.warmup()

        def loss_parts(batch: dict[str, Any]) -> Losses:
            images = normalise_pixels(
                batch["images"].to(self.device), model.config.preprocess, torch.float32
            )
            scores, student, teacher = net(images, candidates)
            rank_sum, rank_count = ranking_loss(scores, batch["targets"].to(self.device))
            distill_sum, distill_count = distillation_loss(student, teacher, batch["valid"])
            return {
                "rank": (rank_sum, rank_count),
                "distill": (config.distill_weight * distill_sum, distill_count),
            }

        def schedule(step: int) -> float:
            return learning_rate(step, total, warmup, config.lr, config.min_lr)

        workers = self._workers(1)
        return StagePlan(
            1, config.epochs, dataset, sampler, workers, net, optimizer, loss_parts, schedule
        )

    def _stage2_plan(self) -> StagePlan:
        """Prompt tuning on cached image features (the vision side is frozen)."""
        config, model = self.config, self.model
        if 1 in self.state.done and self.state.step == 0 and (self.run_dir / "best").is_dir():
            self._load_best()  # prompt tuning starts from the best stage-1 weights
        model.requires_grad_(False)
        model.prompt.requires_grad_(True)
        model.config.prompt_context = True
        optimizer = torch.optim.AdamW(
            model.prompt.parameters(), lr=config.prompt_lr, weight_decay=config.weight_decay
        )
        self._load_optimizer(optimizer)
        self.frozen_weights = train_features.weights_fingerprint(model.visual)
        features = self._features(self.train_data, "train")
        targets = self.train_data.targets.copy()
        targets[features.failed] = 0  # an unreadable image teaches nothing
        net = distributed.parallel(Stage2Net(model, self.text_tokens, self.labels), self.group)
        dataset = FeatureRows({"global": features.global_, "patches": features.patches}, targets)
        sampler = EpochSampler(
            len(dataset), config.seed, config.prompt_batch_size, self.group.rank, self.group.world
        )
        total = math.ceil(sampler.batches_per_epoch() / config.grad_accum) * config.prompt_epochs

        def loss_parts(batch: dict[str, Any]) -> Losses:
            scores = net(batch["global"].to(self.device), batch["patches"].to(self.device))
            return {"rank": ranking_loss(scores, batch["targets"].to(self.device))}

        def schedule(step: int) -> float:
            return learning_rate(step, total, 0, config.prompt_lr, config.prompt_min_lr)

        workers = self._workers(2)
        return StagePlan(
            2, config.prompt_epochs, dataset, sampler, workers, net, optimizer, loss_parts, schedule
        )

    def _epoch(self, plan: StagePlan, epoch: int) -> dict[str, float]:
        """One epoch of a stage, from the resume point on; returns its statistics."""
        config, state, optimizer = self.config, self.state, plan.optimizer
        start = state.batch
        plan.dataset.epoch = epoch
        plan.sampler.set_epoch(epoch, start)
        loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
            plan.dataset,  # type: ignore[arg-type]
            batch_size=plan.sampler.batch_size,
            sampler=plan.sampler,
            collate_fn=plan.dataset.collate,
            num_workers=plan.workers,
            pin_memory=self.device.type == "cuda",
        )
        batches = plan.sampler.batches_per_epoch()
        self.report("epoch_start", stage=plan.stage, epoch=epoch, batches=batches, done=start)
        plan.net.train()  # what the stage trains; the frozen rest stays in eval mode
        started = time.perf_counter()
        for batch_index, batch in enumerate(loader, start=start):
            if self._stop_due() and batch_index % config.grad_accum == 0:
                raise StopTraining  # resumed with a --max-steps already reached
            # A step's micro-batches (the epoch's last step may have fewer): their mean loss.
            step_start = batch_index - batch_index % config.grad_accum
            micro_batches = min(config.grad_accum, batches - step_start)
            last_micro = batch_index == step_start + micro_batches - 1
            self._report_bad_images(plan, batch)
            # Forward, loss, backward; DDP exchanges gradients at a step's last micro-batch.
            with distributed.no_sync(plan.net, last_micro):
                with self._autocast():
                    parts = plan.losses(batch)
                loss, means = global_mean(parts, self.group)
                self.scaler.scale(loss / micro_batches).backward()
            for name, mean in means.items():
                state.loss_sums[name] = state.loss_sums.get(name, 0.0) + mean
            state.images += int(batch["valid"].sum()) * self.group.world
            if last_micro:  # the step's learning rate (times each group's scale), then the step
                lr = plan.schedule(state.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                self.scaler.step(optimizer)
                self.scaler.update()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.total_steps += 1
            state.batch = batch_index + 1
            loss_so_far = {k: v / state.batch for k, v in state.loss_sums.items()}
            self.report("step", stage=plan.stage, epoch=epoch, batch=state.batch, loss=loss_so_far)
            save_point = config.save_every and state.step % config.save_every == 0
            if last_micro and (save_point or self._stop_due()):
                state.seconds += time.perf_counter() - started
                started = time.perf_counter()
                self._save_state(optimizer)
                if self._stop_due():
                    raise StopTraining
        state.seconds += time.perf_counter() - started
        done = max(1, state.batch)
        return {
            "loss": sum(state.loss_sums.values()) / done,
            **{f"{k}_loss": v / done for k, v in state.loss_sums.items()},
            "lr": plan.schedule(max(0, state.step - 1)),
            "images_per_s": state.images / max(state.seconds, 1e-9),
        }

    def _end_epoch(
        self, plan: StagePlan, epoch: int, statistics: dict[str, float], val_map: float
    ) -> None:
        """Checkpoints, a metrics row and a resume point; the best is chosen on validation."""
        state, stage = self.state, plan.stage
        # No validation label has a positive: mAP is undefined and the latest epoch counts.
        improved = math.isnan(val_map) or val_map > state.best_map
        state.epoch = epoch + 1
        state.start_epoch()
        if improved:
            state.best = f"stage {stage} epoch {epoch + 1}"
            state.best_map = state.best_map if math.isnan(val_map) else val_map
        row: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, **statistics}
        row.update(val_map=val_map, best=improved)
        if self.group.main:
            names = set(trainable_names(self.model, stage, self.config)) | self.base_names
            checkpoints.save(self.model, self.run_dir / "last", trained=names)
            if improved:
                checkpoints.save(self.model, self.run_dir / "best", trained=names)
            run_state.append_metrics(self.run_dir, row)
        self._save_state(plan.optimizer)
        distributed.barrier(self.group)
        self.report("epoch_end", **row)

    # --- pieces ---------------------------------------------------------------------------

    def _stop_due(self) -> bool:
        limit = self.config.max_steps
        return limit is not None and self.state.total_steps >= limit

    def _report_bad_images(self, plan: StagePlan, batch: dict[str, Any]) -> None:
        if batch["failed"]:
            paths = [str(plan.dataset.path(index)) for index, _ in batch["failed"]]
            self.report("bad_images", paths=paths, reasons=[r for _, r in batch["failed"]])

    def _autocast(self) -> Any:
        if self.config.amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return nullcontext()

    def _workers(self, stage: int) -> int:
        if stage == 2:
            return 0  # features are memory-mapped: nothing to decode
        if self.config.workers is not None:
            return self.config.workers
        return max(0, min(8, (os.cpu_count() or 2) - 1))

    def _save_state(self, optimizer: torch.optim.Optimizer | None) -> None:
        """A resume point (main process only): trainable tensors, optimiser, position."""
        if not self.group.main:
            return
        model_state = self.model.state_dict()
        names = trainable_names(self.model, 2, self.config)
        saved = None
        if optimizer is not None:
            saved = {"optimizer": optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        run_state.save(self.run_dir, self.state, {n: model_state[n] for n in names}, saved)

    def _load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Continue the optimiser of an interrupted stage (not at a stage's start)."""
        if not (self.state.step or self.state.epoch or self.state.batch):
            return
        saved = run_state.load_optimizer(self.run_dir, self.device)
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            self.scaler.load_state_dict(saved["scaler"])

    def _load_best(self) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(self.run_dir / "best" / checkpoints.WEIGHTS_FILE))
        self.model.load_state_dict(tensors, strict=False)

    def _features(self, data: LabelledImages, name: str) -> train_features.StoredFeatures:
        """Eval-time features of ``data``, computed once (main process) into the run folder."""
        folder = self.run_dir / "features"
        key = {
            "images": train_features.paths_fingerprint(data.paths),
            "count": len(data),
            "weights": self.frozen_weights,
            "preprocess": dataclasses.asdict(self.model.config.preprocess),
        }
        if self.group.main:
            train_features.cached(
                folder, name, key, lambda: train_features.gather(self._encode(data, name))
            )
        distributed.barrier(self.group)
        return train_features.read(folder, name)

    def _encode(self, data: LabelledImages, name: str) -> Iterator[train_features.FeatureBatch]:
        return train_features.encode(
            self.model,
            data.paths,
            self.config.batch_size,
            self._workers(1),
            self.device,
            self._autocast,
            self.report,
            name,
        )

    def _validate(self, stage: int) -> float:
        """mAP on the validation set (seen labels); the same value on every process. Scored
        batch by batch: memory holds one batch of features, never the whole set's."""
        value = 0.0
        batches: Iterable[train_features.FeatureBatch] = ()
        if stage == 2:  # frozen vision side: the features of every epoch are the same
            stored = self._features(self.val_data, "val")
            batches = train_features.stored_batches(stored, self.config.batch_size)
        elif self.group.main:
            batches = self._encode(self.val_data, "val")  # each batch scored, then let go
        if self.group.main:
            value = train_features.validation_map(
                self.model, batches, self.labels, self.val_data.targets
            )
        total = torch.tensor(value, dtype=torch.float64, device=self.device)
        return float(distributed.sum_all(total, self.group))
