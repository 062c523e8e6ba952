"""The training loop: Dice + CE, AdamW with warm-up + cosine/poly, AMP, DDP, validation, early stopping, resume."""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from unet3d import UNet3D
from unet3d.card import card_from_dict
from unet3d.device import resolve_device
from unet3d.errors import CardError
from unet3d.hub import ModelSource
from unet3d.io import Volume
from unet3d.metrics import dice, iou
from unet3d.segmenter import Segmenter
from unet3d.shapes import shape3, spacing3

from .augment import PatchSampler
from .config import ConfigError, TrainConfig, checked
from .data import Case, DatasetError, cases, check_dataset, load_pair, load_subject
from .distributed import Distributed
from .errors import CheckpointError
from .export import build_card, initialise
from .optim import amp_dtype, dice_ce_loss, learning_rate_factor

logger = logging.getLogger(__name__)
CHECKPOINT = "last_checkpoint.pt"
# Config keys a resumed run may change: where and how fast it runs, and where the data lies; never what it computes.
RESUMABLE_CHANGES = {"data.root", "loop.device", "loop.num_threads", "loop.log_every"}


@dataclass
class FitResult:
    model: UNet3D
    best_metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    steps_run: int = 0
    # True when the time limit shortened the learning-rate schedule: such a run depends on the hardware's speed.
    time_limited: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """Runs `fit` for one config; rank 0 validates, checkpoints and logs."""

    def __init__(self, config: TrainConfig, out: str | Path, *, progress: bool = True) -> None:
        self.config, self.out, self.show_progress = checked(config), Path(out), progress
        try:
            card_from_dict(build_card(config))
        except CardError as e:
            raise ConfigError(f"config.card does not make a valid model card: {e}") from e
        total = config.loop.epochs * config.loop.steps_per_epoch
        if config.optim.warmup_steps >= total:
            logger.warning(
                "optim.warmup_steps (%d) >= the run's %d steps: the learning rate never reaches optim.lr",
                config.optim.warmup_steps,
                total,
            )
        self.device = resolve_device(config.loop.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.dist = Distributed(self.device)
        if config.loop.num_threads:
            torch.set_num_threads(config.loop.num_threads)
        torch.manual_seed(config.loop.seed)
        # Contiguous, also on the CPU: channels-last makes a bf16 step 1.45x faster here, but its bf16 backward
        # (torch 2.13, oneDNN) trains far worse (tiny spheres: mDice 0.42 vs 0.90; equal in fp32).
        self.model = UNet3D(num_classes=len(config.card.classes), **config.model.architecture()).to(self.device)
        self.init = None if config.model.init is None else initialise(self.model, config.model.init)
        self.wrapped: nn.Module = self.model
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.amp = amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        self.step = 0
        self.epoch = 0
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": -1, "metrics": {}, "state": None}
        self.bad_epochs = 0
        self.time_limited = False
        self.history: list[dict[str, float]] = []
        self.validation: list[Case] = []  # the cases `fit` measures (the card lists their files)
        self.started = time.perf_counter()

    def fit(
        self, *, resume: bool = False, epoch_callback: Callable[[int, dict[str, float]], bool] | None = None
    ) -> FitResult:
        config = self.config
        started = self.started = time.perf_counter()
        if not resume and (self.out / CHECKPOINT).exists():
            raise CheckpointError(
                f"{self.out} already holds a run ({CHECKPOINT}): continue it with --resume, or train into another --out"
            )
        validation = self.validation = self._validation_cases()
        sampler = self._sampler()
        if resume:
            self._load_checkpoint(sampler)
        num_classes = len(config.card.classes)
        pairs = [load_pair(case, num_classes) for case in validation] if self.dist.is_main else []
        total = config.loop.epochs * config.loop.steps_per_epoch
        stopped_early = False
        while self.epoch < config.loop.epochs:
            train_loss = self._train_epoch(sampler, total)
            self.epoch += 1
            metrics: dict[str, float] = {"epoch": self.epoch, "train_loss": train_loss, "lr": self._lr()}
            stop = False
            out_of_time = time.perf_counter() - started > 60 * (config.loop.time_limit_min or math.inf)
            # The last epoch is validated too when the clock ends the run, so its (lowest learning-rate) weights
            # can be the ones exported.
            due = self.epoch % config.loop.validate_every == 0 or out_of_time
            validated = self.dist.is_main and bool(validation) and due
            if validated:
                metrics.update(self.validate(pairs))
            if self.dist.is_main and (validated or config.loop.monitor == "loss"):
                stop = self._track(metrics)
                if epoch_callback is not None and epoch_callback(self.epoch, metrics):
                    stop = True
            if out_of_time:
                logger.info("time limit reached after epoch %d", self.epoch)
                stop = True
                self.time_limited = self.time_limited or self.epoch < config.loop.epochs
            sampler_states = self.dist.gather(sampler.get_state(), self.device)
            if self.dist.is_main:
                self.history.append(metrics)
                self._log(metrics)
                self._save_checkpoint(sampler_states)
            if self.dist.broadcast_flag(stop, self.device):
                stopped_early = self.epoch < config.loop.epochs
                break
        return self._result(stopped_early)

    def _validation_cases(self) -> list[Case]:
        """The dataset checked against the card, and the validation cases the run measures (at most
        data.max_validation_cases); none only when the monitor is the training loss."""
        config = self.config
        if config.synth.brain_mask:
            from .synth import brain_validation_cases

            validation = brain_validation_cases(config.data.root, config.synth.target)
        else:
            check_dataset(config.data.root, [c["name"] for c in config.card.classes])
            validation = cases(config.data.root, "validation")
        if not validation and config.loop.monitor != "loss":
            raise DatasetError(
                f"{config.data.root}/dataset.json lists no 'validation' cases, so loop.monitor={config.loop.monitor} "
                "cannot be measured: move a few cases from 'training' to a 'validation' list, or set "
                "loop.monitor=loss (the best epoch is then the one with the lowest training loss)"
            )
        return validation[: config.data.max_validation_cases] if config.data.max_validation_cases else validation

    def _result(self, stopped_early: bool) -> FitResult:
        """The best epoch's weights (on the CPU) and what the run did; the process group is let go."""
        self._sync_buffers()
        best_model = copy.deepcopy(self.model).cpu()
        if self.best["state"] is not None:
            best_model.load_state_dict(self.best["state"])
        # DDP's reducer holds gloo work objects: release it while the interpreter is whole, then the process group
        # (freed only at interpreter exit, gloo's threads can abort the process: pytorch/pytorch#179291).
        self.wrapped = self.model
        self.dist.close()
        return FitResult(
            model=best_model.eval(),
            best_metrics=self.best["metrics"],
            best_epoch=int(self.best["epoch"]),
            epochs_run=self.epoch,
            stopped_early=stopped_early,
            steps_run=self.step,
            time_limited=self.time_limited,
            history=self.history,
            seconds=time.perf_counter() - self.started,
        )

    def _sampler(self) -> PatchSampler:
        data = self.config.data
        if self.config.synth.enabled:
            from .synth import head_sampler

            return head_sampler(self.config, self.device, seed=self.config.loop.seed * 1000 + self.dist.rank)
        spacing = spacing3(data.spacing_mm) if data.spacing_mm else None
        training = cases(data.root, "training")
        if not training:
            raise DatasetError(f"{data.root}/dataset.json lists no 'training' cases")
        num_classes = len(self.config.card.classes)
        subjects = [load_subject(c, spacing, self.device, num_classes) for c in training]
        return PatchSampler(
            subjects,
            shape3(data.patch_size),
            self.config.augment,
            clip_percentiles=(data.clip_percentiles[0], data.clip_percentiles[1]),
            foreground_fraction=data.foreground_fraction,
            seed=self.config.loop.seed * 1000 + self.dist.rank,
            device=self.device,
        )

    def _train_epoch(self, sampler: PatchSampler, total: int) -> float:
        config = self.config
        self.wrapped.train()
        losses = []
        bar = tqdm(
            range(config.loop.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=not (self.show_progress and self.dist.is_main),
        )
        for _ in bar:
            factor = learning_rate_factor(self.step, total, config, self._elapsed_fraction())
            if factor < learning_rate_factor(self.step, total, config):
                self.time_limited = True
            for group in self.optimizer.param_groups:
                group["lr"] = config.optim.lr * factor
            images, labels = sampler.sample(config.data.batch_size)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                logits = self.wrapped(images)
            loss = dice_ce_loss(logits, labels, config)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            losses.append(float(loss.detach()))
            if self.step % config.loop.log_every == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-config.loop.log_every :]):.4f}")
        return float(np.mean(losses))

    def validate(self, pairs: list[tuple[Volume, Volume]]) -> dict[str, float]:
        """Per-class Dice/IoU on the validation cases through the core's inference path (means skip background)."""
        card = card_from_dict(build_card(self.config))
        source = ModelSource("training", f"epoch-{self.epoch}", self.out, self.out / "model.safetensors", "")
        segmenter = Segmenter(copy.deepcopy(self.model).eval(), card, source, device=self.device)
        per_class: dict[str, list[float]] = {}
        for image, label in pairs:
            mask = segmenter.predict(image).mask
            reference = np.rint(label.data).astype(np.uint8)
            for cls, info in enumerate(card.classes[1:], start=1):
                per_class.setdefault(f"dice_{info.name}", []).append(dice(mask, reference, cls))
                per_class.setdefault(f"iou_{info.name}", []).append(iou(mask, reference, cls))
        metrics = {key: float(np.mean(values)) for key, values in per_class.items()}
        metrics["mDice"] = float(np.mean([v for k, v in metrics.items() if k.startswith("dice_")]))
        metrics["mIoU"] = float(np.mean([v for k, v in metrics.items() if k.startswith("iou_")]))
        return metrics

    def _track(self, metrics: dict[str, float]) -> bool:
        """Update the best model and the patience counter; True when training should stop."""
        loop = self.config.loop
        score = monitored(metrics, loop.monitor)
        score = -score if loop.monitor == "loss" else score
        if score > self.best["score"] + loop.min_delta:
            self.best = {
                "score": score,
                "epoch": self.epoch,
                "metrics": dict(metrics),
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            }
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if loop.target is not None and loop.monitor != "loss" and metrics[loop.monitor] >= loop.target:
            logger.info("target %s ≥ %.4f reached", loop.monitor, loop.target)
            return True
        return self.bad_epochs >= loop.patience

    def _elapsed_fraction(self) -> float:
        limit = self.config.loop.time_limit_min
        return 0.0 if not limit else (time.perf_counter() - self.started) / (60 * limit)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _log(self, metrics: dict[str, float]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "metrics.csv"
        keys = sorted({k for row in self.history for k in row})
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        shown = {k: v if isinstance(v, int) else float(f"{v:.4g}") for k, v in metrics.items()}  # lr 1e-05, not 0.0
        logger.info("epoch %d: %s", self.epoch, shown)

    def _save_checkpoint(self, sampler_states: list[torch.Tensor]) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0),
            "sampler_rng": sampler_states,
            "time_limited": self.time_limited,
            "step": self.step,
            "epoch": self.epoch,
            "bad_epochs": self.bad_epochs,
            "best_score": self.best["score"],
            "best_epoch": self.best["epoch"],
            "best_metrics": self.best["metrics"],
            "best_state": self.best["state"],
            "history": self.history,
            "config": self.config.to_dict(),
        }
        tmp = self.out / f"{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / CHECKPOINT)

    def _load_checkpoint(self, sampler: PatchSampler) -> None:
        """Restore weights, optimizer, counters and random streams: the run goes on as if never interrupted."""
        path = self.out / CHECKPOINT
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        # Our own file, and still only tensors and plain containers: weights_only=True refuses anything else.
        state = torch.load(path, map_location=self.device, weights_only=True)
        missing = {"scaler", "rng", "cuda_rng", "sampler_rng", "time_limited"} - state.keys()
        if missing:
            raise CheckpointError(
                f"{path} was written by an older version of train/ (it lacks {', '.join(sorted(missing))}): "
                "start the run afresh without --resume"
            )
        changed = _changed_keys(state.get("config"), self.config.to_dict()) - RESUMABLE_CHANGES
        if changed:
            raise CheckpointError(
                f"{path} was written with a different config ({', '.join(sorted(changed))}): --resume continues the "
                "same run, so give it the config the run started with; to train longer or differently, start a "
                "new run in another --out (the learning-rate schedule depends on loop.epochs)"
            )
        try:
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path} holds weights of another network shape ({str(e).splitlines()[-1].strip()}): resume with "
                "the config the run started with"
            ) from e
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        if len(state["sampler_rng"]) == self.dist.world:
            sampler.set_state(state["sampler_rng"][self.dist.rank].cpu())
        else:
            logger.warning(
                "checkpoint was written by %d processes, this run has %d: augmentation draws start afresh",
                len(state["sampler_rng"]),
                self.dist.world,
            )
        self.time_limited = state["time_limited"]
        self.step, self.epoch, self.bad_epochs = state["step"], state["epoch"], state["bad_epochs"]
        self.best = {
            "score": state["best_score"],
            "epoch": state["best_epoch"],
            "metrics": state["best_metrics"],
            "state": state["best_state"],
        }
        self.history = list(state["history"])
        logger.info("resumed from epoch %d (step %d)", self.epoch, self.step)

    def _sync_buffers(self) -> None:
        """BatchNorm running statistics are rank-local after the last step: take rank 0's everywhere."""
        if self.dist.active:
            for buffer in self.model.buffers():
                dist.broadcast(buffer.data, src=0)


def monitored(metrics: dict[str, float], monitor: str) -> float:
    """The value `loop.monitor` names: a validation mean (mIoU, mDice) or, for `loss`, the epoch's training loss."""
    return metrics["train_loss"] if monitor == "loss" else metrics[monitor]


def _changed_keys(saved: dict[str, Any] | None, current: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two config dicts (none when the checkpoint predates configs)."""
    if saved is None:
        return set()
    changed = set()
    for key in saved.keys() | current.keys():
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and prefix == "":
            changed |= _changed_keys(old, new, f"{key}.")
        elif old != new:
            changed.add(prefix + key)
    return changed
