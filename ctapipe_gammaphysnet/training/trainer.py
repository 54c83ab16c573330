"""The training loop of γ-PhysNet: one network for one telescope type.

Per epoch: a pass over the training stream (AdamW, the multi-task loss), a pass over the
validation stream (per-task losses, gammaness AUC, energy resolution, 68 % angular resolution),
a line in the metrics CSV (and TensorBoard when asked), and a checkpoint from which ``resume``
continues bit for bit: the data order depends only on (seed, epoch) and the checkpoint holds
the optimizer, scheduler, early-stopping and random-number states.

Under ``torchrun`` (see ``distributed``) each process trains on its own share of the training
chunks in ``DistributedDataParallel``; ``batch_size`` stays the global batch, split over the
processes, and each step's gradient is the mean over the global batch as with one process.
Rank 0 validates on the whole validation stream and alone writes the checkpoint and metrics.
"""
import csv
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ctapipe.core import Component
from ctapipe.core.traits import Bool, CaselessStrEnum, Dict, Float, Int, Unicode

from ..constants import CHECKPOINT_NAME
from ..evaluation.metrics import PREDICTION_METRICS, prediction_metrics
from ..io.outputs import atomic_output
from ..nn.losses import BALANCING, TASKS, MultiTaskLoss
from ..nn.network import PRESETS, GammaPhysNet, NetworkConfig
from ..progress import progress_bar
from . import distributed
from .augmentation import ImageAugmentation

__all__ = ["Checkpoint", "EarlyStopping", "GammaPhysNetTrainer", "MetricsLog", "TrainingError",
           "median_energy_calibration"]

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.csv"


class TrainingError(RuntimeError):
    """Training cannot go on as asked (e.g. nothing to resume from); the message says why."""


@dataclass
class TrainingParts:
    """What one training updates: the network, the ``model`` that computes its steps (the network
    itself, or wrapped by DDP and/or torch.compile; it shares the network's parameters), the
    multi-task loss, the optimizer and its schedule, and the layer GradNorm measures (or None)."""

    network: GammaPhysNet
    model: torch.nn.Module
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gradnorm_layer: list | None
    device: torch.device


class EarlyStopping:
    """The best validation loss so far, its epoch and weights; says stop after ``patience`` epochs
    without a better one (0: never)."""

    def __init__(self, patience):
        self.patience = patience
        self.best_loss, self.best_epoch, self.bad_epochs, self.best_network = float("inf"), -1, 0, None

    def step(self, epoch, val_loss, network):
        """Record the validation loss after ``epoch`` (counted from 1); True: stop training."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_network = {k: v.detach().clone() for k, v in network.state_dict().items()}
        else:
            self.bad_epochs += 1
        return 0 < self.patience <= self.bad_epochs

    def state_dict(self):
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "best_network": self.best_network}

    def load_state_dict(self, state):
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        self.bad_epochs, self.best_network = state["bad_epochs"], state["best_network"]


class Checkpoint:
    """The checkpoint in a training's work directory: all that ``resume`` needs to continue bit for
    bit (the network, loss, optimizer and scheduler states, torch's random-number state, the epoch,
    the metrics history and the early-stopping state). Rank 0 alone writes it; on resume rank 0
    reads it and all ranks get it, so no file system shared between nodes is needed."""

    def __init__(self, path, parts, early_stopping):
        self.path, self.parts, self.early_stopping = Path(path), parts, early_stopping

    def save(self, epoch, history):
        if not distributed.is_main_process():
            return
        parts = self.parts
        with atomic_output(self.path, overwrite=True) as tmp:
            torch.save({
                "network": parts.network.state_dict(), "loss": parts.loss_fn.state_dict(),
                "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "state": {"epoch": epoch, "history": history, **self.early_stopping.state_dict()},
            }, tmp)

    def restore(self):
        """Load the checkpoint into the parts and the early stopping; returns (epoch, history)."""
        checkpoint = distributed.broadcast_object(
            torch.load(self.path, map_location="cpu", weights_only=True)
            if distributed.is_main_process() and self.path.is_file() else None)
        if checkpoint is None:
            raise TrainingError(
                f"{self.path}: no checkpoint to resume from (the earlier training "
                "stopped before its first epoch ended); start again with --overwrite")
        parts = self.parts
        parts.network.load_state_dict(checkpoint["network"])
        parts.loss_fn.load_state_dict(checkpoint["loss"])
        parts.optimizer.load_state_dict(checkpoint["optimizer"])
        parts.scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.early_stopping.load_state_dict(checkpoint["state"])
        return checkpoint["state"]["epoch"], checkpoint["state"]["history"]


class MetricsLog:
    """A row of metrics per epoch in ``metrics.csv`` in the work directory, and as TensorBoard
    scalars when asked; written by rank 0 alone."""

    def __init__(self, work_dir, tensorboard=False):
        self.path = Path(work_dir) / METRICS_NAME
        self.enabled = distributed.is_main_process()
        self.writer = _tensorboard_writer(work_dir) if tensorboard and self.enabled else None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.writer is not None:
            self.writer.close()

    def append(self, row):
        if not self.enabled:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                out.writeheader()
            out.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])


class GammaPhysNetTrainer(Component):
    """Trains a γ-PhysNet network on streams of labelled images."""

    preset = CaselessStrEnum(list(PRESETS), default_value="small",
                             help="Network size preset (paper = the published γ-PhysNet)").tag(config=True)
    attention = Bool(True, help="Use the dual-attention modules after each stage").tag(config=True)
    pointing_aware = Bool(
        False, help="Give the network the telescope pointing's zenith angle as an input, for "
                    "training on files of several pointings (docs/zenith.rst)",
    ).tag(config=True)
    network_overrides = Dict(
        default_value={}, help="Network options overriding the preset (keys of NetworkConfig)"
    ).tag(config=True)
    epochs = Int(20, help="Maximum number of epochs").tag(config=True)
    batch_size = Int(64, help="Images per batch (over all processes under torchrun)").tag(config=True)
    learning_rate = Float(1e-3, help="AdamW learning rate").tag(config=True)
    weight_decay = Float(1e-4, help="AdamW weight decay").tag(config=True)
    lr_schedule = CaselessStrEnum(["cosine", "step", "constant"], default_value="cosine",
                                  help="Learning-rate schedule over the epochs").tag(config=True)
    lr_step_epochs = Int(10, help="Epochs between ×0.1 steps (lr_schedule=step)").tag(config=True)
    early_stopping_patience = Int(
        5, help="Stop after this many epochs without a better validation loss (0: never)"
    ).tag(config=True)
    loss_balancing = CaselessStrEnum(list(BALANCING), default_value="uncertainty",
                                     help="How the task losses are balanced").tag(config=True)
    task_weights = Dict(default_value={}, help="Task weights for loss_balancing=fixed").tag(config=True)
    label_smoothing = Float(0.0, help="Label smoothing of the class cross-entropy").tag(config=True)
    calibrate_energy = Bool(
        True, help="After training, fold a linear correction of log10 E into the energy output so "
                   "that the median of log10(E_true / E_reco) of the validation gammas is zero in "
                   "every bin of reconstructed energy (the model file records it)",
    ).tag(config=True)
    seed = Int(0, help="Random seed: same data + same seed on CPU give identical weights").tag(config=True)
    device = Unicode(
        "auto", help="torch device: auto (CUDA when present), cpu, cuda, cuda:1 …; "
                     "under torchrun, auto and cuda mean the process's own GPU (LOCAL_RANK)",
    ).tag(config=True)
    mixed_precision = Bool(True, help="bfloat16 autocast on CUDA (ignored on CPU)").tag(config=True)
    compile = Bool(
        False,
        help="torch.compile the training steps: faster on CPU (docs/performance.rst) after a "
             "one-off compilation per batch shape (the last batch of an epoch is a second one); "
             "validation stays eager. Not with loss_balancing=gradnorm, which needs double backward",
    ).tag(config=True)
    num_workers = Int(1, help="DataLoader worker processes reading the files").tag(config=True)
    tensorboard = Bool(False, help="Also write TensorBoard logs (needs tensorboard)").tag(config=True)
    progress_bar = Bool(True, help="Show progress bars").tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        # refused when configured, before the tools read any file
        if self.compile and self.loss_balancing == "gradnorm":
            raise ValueError("GammaPhysNetTrainer: compile does not work with loss_balancing="
                             "gradnorm (torch.compile has no double backward)")
        self.augmentation = ImageAugmentation(parent=self)

    def network_config(self):
        config = NetworkConfig.from_dict({**PRESETS[self.preset].to_dict(), **self.network_overrides})
        config.attention = self.attention
        config.pointing = config.pointing or self.pointing_aware
        return config

    def torch_device(self):
        if self.device == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            device = torch.device(self.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", distributed.local_rank())
        return device

    def _loader(self, stream, batch_size=None):
        return torch.utils.data.DataLoader(
            stream, batch_size=batch_size or self.batch_size, num_workers=self.num_workers,
            persistent_workers=False, pin_memory=self.torch_device().type == "cuda",
        )

    def _schedule(self, optimizer):
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        if self.lr_schedule == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step_epochs, gamma=0.1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    def _autocast(self, device):
        enabled = self.mixed_precision and device.type == "cuda"
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

    def train(self, grid, train_stream, validation_stream, work_dir, resume=False, after_epoch=None):
        """Train one network; returns ``(network, summary)`` with the best validation epoch's weights.

        ``work_dir`` receives the checkpoint and the metrics CSV. ``after_epoch(row)``, when given,
        is called with each epoch's metrics once its checkpoint is written (tests interrupt a
        training there to resume it).
        """
        work_dir = self._prepare_work_dir(work_dir, resume)
        network = self._new_network(grid, train_stream, start_from_data=not resume)
        parts = self._training_parts(network)
        early_stopping = EarlyStopping(self.early_stopping_patience)
        checkpoint = Checkpoint(work_dir / CHECKPOINT_NAME, parts, early_stopping)
        epoch, history = self._resume(checkpoint) if resume else (0, [])
        parts.model = self._training_model(network)
        train_stream.set_distributed(distributed.rank(), distributed.world_size())
        with MetricsLog(work_dir, self.tensorboard) as metrics_log:
            while epoch < self.epochs:
                row = self._epoch(parts, train_stream, validation_stream, epoch)
                metrics_log.append(row)
                history.append(row)
                epoch += 1
                stop = early_stopping.step(epoch, row["val_loss"], network)
                checkpoint.save(self.epochs if stop else epoch, history)  # stopped: resume ends too
                if after_epoch is not None:
                    after_epoch(row)
                if stop:
                    self.log.info("early stopping: no better validation loss for %d epochs",
                                  early_stopping.bad_epochs)
                    break
        network, summary = self._best_network(network, early_stopping, history)
        if self.calibrate_energy:
            summary["energy_calibration"] = self._calibrate_energy(network, validation_stream)
        return network, summary

    def _calibrate_energy(self, network, validation_stream):
        """Fold the validation gammas' median energy correction into the energy output.

        An L1 loss makes the output the median log-energy only where the network fits: with few
        bright images it pulls them towards the many faint ones and reads them low. The
        correction, linear in log10 E_reco, is fitted to the medians per bin of reconstructed
        energy (`median_energy_calibration`) and applied as a scale and offset of the last layer,
        so that inference and export see an ordinary network."""
        calibration = None
        if distributed.is_main_process():
            outputs, targets = self.predict(network, validation_stream, torch.device("cpu"))
            gamma = targets["label"] == 1
            offset, slope, n_images = median_energy_calibration(
                np.log10(targets["true_energy_tev"][gamma]), outputs["log_energy"][gamma])
            calibration = {"offset_dex": offset, "slope": slope, "n_validation_gammas": n_images}
        calibration = distributed.broadcast_object(calibration)
        last = network.energy_head[-1]
        with torch.no_grad():
            last.weight.mul_(1.0 + calibration["slope"])
            last.bias.mul_(1.0 + calibration["slope"]).add_(calibration["offset_dex"])
        self.log.info("energy calibration from %d validation gammas: log10 E += %.4f %+.4f log10 E",
                      calibration["n_validation_gammas"], calibration["offset_dex"],
                      calibration["slope"])
        return calibration

    def _prepare_work_dir(self, work_dir, resume):
        work_dir = Path(work_dir)
        n_ranks = distributed.world_size()
        if self.batch_size % n_ranks:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the "
                             f"{n_ranks} training processes")
        if distributed.is_main_process():
            work_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (work_dir / METRICS_NAME).unlink(missing_ok=True)
        return work_dir

    def _new_network(self, grid, train_stream, start_from_data):
        """The seed's initial network; its energy bias and direction map fitted to the first gamma
        images of the stream when ``start_from_data`` (a resumed training loads its weights)."""
        torch.manual_seed(self.seed)
        network = GammaPhysNet(grid, self.network_config()).to(self.torch_device())
        if start_from_data:
            # the first gamma images of the stream, read once for both starting points
            first_gammas = [s for s in itertools.islice(train_stream, 512) if s["label"] == 1]
            self._start_from_median_energy(network, first_gammas)
            self._start_from_image_centroids(network, first_gammas)
        return network

    def _training_parts(self, network):
        device = self.torch_device()
        loss_fn = MultiTaskLoss(self.loss_balancing, self.task_weights, self.label_smoothing).to(device)
        optimizer = torch.optim.AdamW([
            {"params": network.parameters(), "weight_decay": self.weight_decay},
            {"params": loss_fn.parameters(), "weight_decay": 0.0},
        ], lr=self.learning_rate)
        return TrainingParts(network=network, model=network, loss_fn=loss_fn, optimizer=optimizer,
                             scheduler=self._schedule(optimizer),
                             gradnorm_layer=self._gradnorm_layer(network), device=device)

    def _gradnorm_layer(self, network):
        """The last layer shared by all tasks, on which GradNorm compares their gradients."""
        if self.loss_balancing != "gradnorm":
            return None
        return [network.stages[-1].blocks[-1].conv2.weight]

    def _resume(self, checkpoint):
        epoch, history = checkpoint.restore()
        self.log.info("resuming %s after epoch %d", checkpoint.path.parent.name, epoch)
        return epoch, history

    def _training_model(self, network):
        model = distributed.wrap(network, self.torch_device())
        if self.compile:
            model = torch.compile(model)  # shares the parameters with `network`
        return model

    def _epoch(self, parts, train_stream, validation_stream, epoch):
        """Train one epoch, step the schedule, validate; returns the epoch's row of metrics."""
        train_stream.set_epoch(epoch)
        start = time.perf_counter()
        train_losses, n_train, zenith_range = self._train_epoch(parts, train_stream, epoch)
        duration = time.perf_counter() - start
        ranges = [distributed.broadcast_object(zenith_range, source=r)
                  for r in range(distributed.world_size())]
        parts.scheduler.step()
        # global metrics: rank 0 sees the whole validation stream, the others wait for them
        metrics = distributed.broadcast_object(
            self.evaluate(parts.network, validation_stream, parts.loss_fn, parts.device)
            if distributed.is_main_process() else None)
        row = {"epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"],
               "train_images": n_train, "train_images_per_s": n_train / max(duration, 1e-9),
               "train_pointing_zenith_min_deg": min(r[0] for r in ranges),
               "train_pointing_zenith_max_deg": max(r[1] for r in ranges),
               **{f"train_loss_{t}": v for t, v in train_losses.items()},
               **{f"weight_{t}": v for t, v in parts.loss_fn.balancing.task_weights().items()},
               **metrics}
        self.log.info("epoch %d: %s", epoch + 1, ", ".join(
            f"{k}={row[k]:.4g}" for k in ("train_images_per_s", "val_loss", "val_auc",
                                          "val_energy_resolution", "val_angular_resolution_deg")))
        return row

    def _best_network(self, network, early_stopping, history):
        """The network with the best validation epoch's weights, and the training's summary."""
        if early_stopping.best_network is not None:
            network.load_state_dict(early_stopping.best_network)
        best = history[early_stopping.best_epoch - 1] if early_stopping.best_epoch > 0 else {}
        # (checkpoints of earlier versions have epochs without the zenith range)
        low = min((row.get("train_pointing_zenith_min_deg", np.inf) for row in history), default=np.inf)
        high = max((row.get("train_pointing_zenith_max_deg", -np.inf) for row in history), default=-np.inf)
        summary = {"epochs_trained": len(history), "best_epoch": early_stopping.best_epoch,
                   "pointing_zenith_range_deg": [float(low), float(high)] if low <= high else None,
                   "validation": {k: v for k, v in best.items() if k.startswith("val_")}}
        return network.cpu().eval(), summary

    @staticmethod
    def _start_from_median_energy(network, gammas):
        """Set the energy output's bias to the median log-energy of the first gamma images.

        An L1 loss moves a bias by about one learning rate per step: starting at the data's median
        saves the hundreds of steps that an offset of one decade would take.
        """
        if gammas:
            with torch.no_grad():
                network.energy_head[-1].bias.fill_(float(np.median([s["log_energy"] for s in gammas])))

    @staticmethod
    def _start_from_image_centroids(network, gammas):
        """Fit the direction head's map from the camera to the TelescopeFrame to the first gamma
        images: their initial votes (the image centroids) against their true source positions.

        The map holds the camera's plate scale, which the network cannot know; a least-squares
        start saves the steps an L1 loss needs to learn it while the votes learn their offsets.
        """
        if len(gammas) < 10:
            return
        device = network.input_mask.device
        image, peak_time, zenith = (torch.from_numpy(np.stack([s[key] for s in gammas])).float().to(device)
                                    for key in ("image", "peak_time", "pointing_zenith"))
        direction = torch.from_numpy(np.stack([s["direction"] for s in gammas])).double()
        was_training = network.training
        network.eval()
        with torch.no_grad():
            vote = network.camera_vote(image, peak_time, zenith).double().cpu()
            design = torch.cat([vote, torch.ones(len(vote), 1, dtype=vote.dtype)], dim=1)
            solution = torch.linalg.lstsq(design, direction).solution  # (3, 2)
            network.direction_head.to_telescope_frame.weight.copy_(solution[:2].T.float())
            network.direction_head.to_telescope_frame.bias.copy_(solution[2].float())
        network.train(was_training)

    def _train_epoch(self, parts, stream, epoch):
        """One pass over the training stream; per-task mean losses and images, over all ranks, and
        the (min, max) pointing zenith (deg) of this process's images.

        Under DDP the ranks step together: each step's loss is weighted by the rank's share of the
        step's images, so the averaged gradient is the mean over all of them. A rank whose chunks
        are used up joins the remaining steps with an idle batch of weight 0 until all are done.
        """
        n_ranks = distributed.world_size()
        parts.model.train()
        parts.loss_fn.train()
        sums = torch.zeros(len(TASKS), dtype=torch.float64)
        n_images = 0
        zenith_range = (float("inf"), float("-inf"))
        progress = progress_bar(self._loader(stream, self.batch_size // n_ranks),
                                desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False,
                                disable=not (self.progress_bar and distributed.is_main_process()))
        batches = iter(progress)
        while True:
            batch = next(batches, None)
            n = 0 if batch is None else len(batch["label"])
            n_step = int(distributed.sum_over_ranks(n)) if n_ranks > 1 else n
            if n_step == 0:
                break
            total, losses = self._step(parts, batch, n * n_ranks / n_step, epoch)
            if batch is None:
                continue
            n_images += n
            zenith_range = (min(zenith_range[0], float(batch["pointing_zenith"].min())),
                            max(zenith_range[1], float(batch["pointing_zenith"].max())))
            sums += torch.tensor([float(losses[t]) * n for t in TASKS], dtype=torch.float64)
            progress.set_postfix(loss=float(total.detach()))
        sums = distributed.sum_over_ranks(torch.cat([sums, torch.tensor([float(n_images)])]))
        n_images = int(sums[-1])
        if n_images == 0:
            raise RuntimeError("the training stream gave no images")
        return {t: float(s) / n_images for t, s in zip(TASKS, sums)}, n_images, zenith_range

    def _step(self, parts, batch, weight, epoch):
        """One optimizer step on a batch (None: the idle batch), its loss scaled by ``weight``;
        returns the total and per-task losses."""
        idle = batch is None
        if idle:
            batch = _idle_batch(parts.network.grid.n_pixels)
            parts.network.eval()  # the idle batch must not touch the batch-norm statistics
        batch = {k: v.to(parts.device, non_blocking=True) for k, v in batch.items()}
        if not idle:
            batch["image"], batch["peak_time"] = self.augmentation(batch["image"], batch["peak_time"])
        parts.optimizer.zero_grad(set_to_none=True)
        with self._autocast(parts.device):
            outputs = parts.model(batch["image"], batch["peak_time"], batch["pointing_zenith"])
        total, losses = parts.loss_fn(outputs, batch, parts.gradnorm_layer)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}: {losses}")
        (total * weight).backward()
        distributed.average_gradients(parts.loss_fn)
        parts.optimizer.step()
        if idle:
            parts.network.train()
        return total, losses

    @torch.no_grad()
    def predict(self, network, stream, device=None):
        """Network outputs and targets over a whole stream, as numpy arrays."""
        device = device or self.torch_device()
        network.eval()
        collected = []
        for batch in self._loader(stream):
            with self._autocast(device):
                outputs = network(batch["image"].to(device), batch["peak_time"].to(device),
                                  batch["pointing_zenith"].to(device))
            outputs = {k: v.float().cpu() for k, v in outputs.items()}
            outputs["gammaness"] = GammaPhysNet.gammaness(outputs)
            collected.append(({k: v.numpy() for k, v in outputs.items()},
                              {k: v.numpy() for k, v in batch.items()
                               if k not in ("image", "peak_time", "pointing_zenith")}))
        if not collected:
            raise RuntimeError("the validation stream gave no images")
        outputs = {k: np.concatenate([c[0][k] for c in collected]) for k in collected[0][0]}
        targets = {k: np.concatenate([c[1][k] for c in collected]) for k in collected[0][1]}
        return outputs, targets

    def evaluate(self, network, stream, loss_fn, device=None):
        """Validation metrics of a network on a stream."""
        outputs, targets = self.predict(network, stream, device)
        with torch.no_grad():
            losses = MultiTaskLoss("fixed").cpu()(
                {k: torch.from_numpy(v) for k, v in outputs.items()},
                {k: torch.from_numpy(v) for k, v in targets.items()})[1]
        metrics = {f"val_loss_{t}": float(v) for t, v in losses.items()}
        metrics["val_loss"] = sum(metrics.values())
        metrics["val_images"] = len(targets["label"])
        values = prediction_metrics(targets["label"], outputs["gammaness"], targets["true_energy_tev"],
                                    outputs["log_energy"], targets["direction"], outputs["direction"])
        metrics.update((f"val_{name}", value) for name, value in zip(PREDICTION_METRICS, values))
        return metrics


def median_energy_calibration(log_true, log_reco, bin_width=0.25, min_images=20):
    """``(offset, slope, n)``: the correction log_reco → log_reco + offset + slope × log_reco
    after which the median of log_true − log_reco is about zero in every bin of log_reco, and the
    number ``n`` of usable (finite) pairs.

    The medians of log_true − log_reco in bins of ``bin_width`` decades of log_reco holding at
    least ``min_images`` images are fitted by a straight line (least squares weighted by the bins'
    counts); with one such bin the offset is the median over all images and the slope zero, with
    fewer than ``min_images`` images nothing is corrected."""
    log_true, log_reco = np.asarray(log_true, dtype=float), np.asarray(log_reco, dtype=float)
    usable = np.isfinite(log_true) & np.isfinite(log_reco)
    log_true, log_reco = log_true[usable], log_reco[usable]
    n_images = int(usable.sum())
    if n_images < min_images:
        return 0.0, 0.0, n_images
    residual = log_true - log_reco
    bins = np.floor(log_reco / bin_width).astype(int)
    centres, medians, counts = [], [], []
    for b in np.unique(bins):
        members = bins == b
        if members.sum() >= min_images:
            centres.append(np.median(log_reco[members]))
            medians.append(np.median(residual[members]))
            counts.append(members.sum())
    if len(centres) < 2:
        return float(np.median(residual)), 0.0, n_images
    slope, offset = np.polyfit(centres, medians, 1, w=np.sqrt(counts))
    return float(offset), float(slope), n_images


def _tensorboard_writer(work_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise RuntimeError("tensorboard=True needs the tensorboard package "
                           "(pip install ctapipe_gammaphysnet[tensorboard])") from err
    return SummaryWriter(log_dir=str(Path(work_dir) / "tensorboard"))


def _idle_batch(n_pixels):
    """One empty image with dummy targets, for a rank that has no data left in a step."""
    return {"image": torch.zeros(1, n_pixels), "peak_time": torch.zeros(1, n_pixels),
            "pointing_zenith": torch.zeros(1),
            "label": torch.zeros(1, dtype=torch.long), "log_energy": torch.zeros(1),
            "true_energy_tev": torch.ones(1), "direction": torch.zeros(1, 2),
            "impact": torch.zeros(1, 2)}
