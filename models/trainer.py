"""One trainer for every torch model: a model supplies its network and its loss on a batch; samplers
supply the batches; a validation callback decides early stopping. The trainer does the rest.

    trainer = Trainer(TrainerConfig.from_mapping(cfg), seed, name="DMTL")
    result = trainer.train(setup, model.loss, train, context)   # a model's fit; setup(rows, part) -> Prepared

    # what ``train`` does: early stopping on the fold's validation part picks the epoch count, then
    # (trainer.refit, the default) the model is rebuilt on the WHOLE training part and trained that long
    part = trainer.validation(train, context)          # the fold's validation part (carved once, by the fold)
    net, sampler, validation = setup(part.fit, part)   # built on the fitting rows; validation on part.val
    selected = trainer.fit(net, model.loss, sampler, validation, context)
    net, sampler, _ = setup(train, None)               # rebuilt (seeded) on every training row
    result = trainer.refit(net, model.loss, sampler, selected, context)

The model interface is one function, ``loss(net, batch) -> (total, {name: part})`` (RecBole's
``calculate_loss``, with the network passed in so that an edited network trains as written):
``batch`` is a ``models.samplers.Batch`` (a list of tensors, one row per example, and the stream it
came from); ``total`` is back-propagated, every part is averaged per epoch and logged as
``train_<name>`` / ``val_<name>`` next to ``train_loss`` / ``val_loss`` (the total).

Early stopping reads a validation callback (``Validation``): ``ValidationLoss`` (the model's loss on
the validation rows, minimised: val MSE, DMTL's total) or ``ValidationScore`` (a score to maximise,
e.g. a ranking metric of the model's predictions on the validation candidates, which
``FitContext.ranking_metric`` hands a model). The validation rows are the fold's
(benchmark/protocol/folds.py): the trainer never carves its own.

What the trainer owns (docs/protocol.md, "Training"): the validated ``trainer.*`` config, the
device, the epoch loop over the sampler's batches (one seeded generator for every draw; losses summed
on the device and read once per epoch: no per-row Python, no per-batch host sync), autograd +
``torch.optim.Adam`` (fused where torch has a fused kernel for the device; ``trainer.sparse_embeddings``:
``SparseAdam`` for the embedding tables, see ``Optimizers``), early stopping restoring the best
weights, per-epoch metrics (MLflow via ``FitContext``) and a progress bar (on a terminal only), and the NaN/inf check.
It knows nothing about groups, samplers' kinds or any one model.

Refit (``trainer.refit``, default true; docs/protocol.md "Training (torch models)"): early stopping
spends part of the training data on choosing the epoch count, while every baseline fits on all of it.
So once the early-stopping phase has chosen ``best_epoch``, ``Trainer.train`` has the model rebuild its
network, vocabularies and scalers on the whole training part (``setup(train, None)``, seeded as the
first build) and trains it for exactly ``best_epoch`` epochs at the same batch size and learning rate,
with a generator seeded as the first phase's; that network is the fitted model. ``trainer.refit=false``
keeps the early-stopping weights (fitted on the fitting rows only), the behaviour before #23.
Both phases are in ``FitResult`` (``history``: the early-stopping epochs, ``refit_history``: the
refit's), logged per epoch (the refit's as ``refit_train_*``) and in the ``training_history`` artifact
with a ``phase`` column (``history_frame``).

Fixed epochs (``trainer.fixed_epochs=N``, default null): no validation and no early stopping; the model
is built on the whole training part and trained exactly N epochs (the refit path with N as its epoch
count). Only a reproduction of a reference protocol uses it (an author's reported epoch count); the
harness's own protocol picks the epoch count on validation.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.core.console import progress
from benchmark.core.errors import ConfigError, TrainingError, require
from benchmark.protocol.folds import Fold, Holdout
from models.base import FitContext
from models.samplers import Batch, Sampler

log = logging.getLogger(__name__)

# (net, batch) -> (total loss, {name: loss part}): a model's loss (module docstring)
LossFunction = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]

# trainer keys that existed once: a config still setting one gets this one-line error, not a silent no-op
REMOVED_KEYS = {
    "step": "trainer.step was removed: every torch model trains with autograd + torch.optim.Adam "
            "(models/trainer.py); delete trainer.step from the command line and `step:` from your trainer config",
}

DEVICES: dict[str, Callable[[], bool]] = {
    "auto": lambda: True, "cpu": lambda: True, "cuda": torch.cuda.is_available,
}


def check_removed_keys(trainer: Mapping[str, Any] | None) -> None:
    """Refuse a removed ``trainer.*`` key (for every model: baselines ignore the trainer otherwise)."""
    for key in trainer or {}:
        if key in REMOVED_KEYS:
            raise ConfigError(REMOVED_KEYS[key])


def resolve_device(name: str) -> torch.device:
    require(name in DEVICES, f"trainer.device={name!r} is unknown; use one of {sorted(DEVICES)}")
    require(DEVICES[name](), f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def adam(params, device: torch.device, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one kernel for all parameters) where torch has one for the device."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused = device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # a torch without the helper: the default (foreach) implementation
        fused = False
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def rmsprop(params, device: torch.device, lr: float, weight_decay: float) -> torch.optim.RMSprop:
    """torch's RMSprop at its defaults (alpha 0.99, eps 1e-8): the optimizer of AGREE's and ConsRec's reference
    code, for their reproductions (``trainer.optimizer=rmsprop``)."""
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS = {"adam": adam, "rmsprop": rmsprop}
# trainer.optimizer_reset: when a new optimizer (fresh state) replaces the old one
RESETS = ("never", "epoch", "stream")


class Optimizers:
    """Adam over the network's parameters; with ``sparse``, every ``nn.Embedding`` computes sparse
    gradients (its ``sparse`` flag: the network's definition is unchanged) and ``torch.optim.SparseAdam``
    updates only the rows a batch used, while Adam updates the dense layers.

    Why: a dense embedding gradient is a table-sized tensor every step, and dense Adam then updates
    every row, so an epoch costs steps x table rows: rows^2 as users and items grow with the ratings.
    The price: SparseAdam is lazy Adam (a row's moments move only when the row is in a batch), so its
    training differs from Adam's; it is off by default, and it cannot apply weight decay.
    """

    def __init__(self, net: nn.Module, device: torch.device, lr: float, weight_decay: float, sparse: bool,
                 kind: str = "adam"):
        self.tables = [module for module in net.modules() if isinstance(module, nn.Embedding)] if sparse else []
        require(not (self.tables and weight_decay > 0),
                f"trainer.sparse_embeddings=true cannot apply trainer.weight_decay={weight_decay} to the embedding "
                f"tables (torch's SparseAdam has none); set trainer.weight_decay=0 or trainer.sparse_embeddings=false")
        self.was_sparse = [table.sparse for table in self.tables]
        for table in self.tables:
            table.sparse = True
        sparse_params = {id(table.weight) for table in self.tables}
        dense = [param for param in net.parameters() if id(param) not in sparse_params]
        require(kind in OPTIMIZERS, f"trainer.optimizer={kind!r} is unknown; use one of {sorted(OPTIMIZERS)}")
        require(not (self.tables and kind != "adam"), f"trainer.sparse_embeddings=true needs trainer.optimizer=adam "
                                                      f"(SparseAdam), not {kind}")
        self.build = lambda: ([torch.optim.SparseAdam([table.weight for table in self.tables], lr=lr)]
                              if self.tables else []) + ([OPTIMIZERS[kind](dense, device, lr, weight_decay)] if dense else [])
        self.all = self.build()

    def reset(self) -> None:
        """New optimizers over the same parameters: their state (moments, running averages) starts again
        (``trainer.optimizer_reset``: the reference codes of AGREE and ConsRec build one every epoch or phase)."""
        self.all = self.build()

    def zero_grad(self) -> None:
        for optimizer in self.all:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.all:
            optimizer.step()

    def restore(self) -> None:
        """The embeddings' own ``sparse`` flags again (prediction and a saved model are unaffected either way)."""
        for table, sparse in zip(self.tables, self.was_sparse):
            table.sparse = sparse


OPTIONAL = ("fixed_epochs", "optimizer", "optimizer_reset")  # keys a trainer mapping may leave out (defaults)


@dataclass(frozen=True)
class TrainerConfig:
    """``conf/trainer/default.yaml``, validated: every torch model reads it as ``model.trainer``.
    ``optimizer`` (adam | rmsprop) and ``optimizer_reset`` (never | epoch | stream: a new optimizer at every
    epoch, or whenever the batches' stream changes, e.g. the group phase then the user phase of
    ``Interleaved(schedule="sequential")``) exist for the reproductions of reference code that builds a new
    RMSprop every epoch or phase; the harness's protocol keeps one Adam for the whole fit."""

    lr: float = 0.005
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_epochs: int = 50
    patience: int = 3
    val_size: float = 0.1
    device: str = "auto"
    progress: bool = True
    sparse_embeddings: bool = False
    refit: bool = True
    fixed_epochs: int | None = None
    optimizer: str = "adam"
    optimizer_reset: str = "never"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, model: str = "model") -> "TrainerConfig":
        values = dict(values or {})
        check_removed_keys(values)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        require(not unknown, f"trainer has unknown keys {unknown}; use {names}")
        missing = [name for name in names if name not in values and name not in OPTIONAL]  # optional: their defaults
        require(not missing, f"model.trainer lacks {missing}; keep `trainer: ${{trainer}}` in conf/model/{model}.yaml")
        number = lambda key: isinstance(values[key], (int, float)) and not isinstance(values[key], bool)  # noqa: E731
        integer = lambda key: isinstance(values[key], int) and not isinstance(values[key], bool)  # noqa: E731
        require(number("lr") and math.isfinite(values["lr"]) and values["lr"] > 0,
                f"trainer.lr={values['lr']} must be a finite number > 0")
        require(number("weight_decay") and math.isfinite(values["weight_decay"]) and values["weight_decay"] >= 0,
                f"trainer.weight_decay={values['weight_decay']} must be a finite number >= 0")
        for key in ("batch_size", "max_epochs", "patience"):
            require(integer(key) and values[key] >= 1, f"trainer.{key}={values[key]} must be an integer >= 1")
        require(number("val_size") and 0.0 < values["val_size"] < 1.0,
                f"trainer.val_size={values['val_size']} must be in (0, 1)")
        fixed = values.get("fixed_epochs")
        require(fixed is None or (isinstance(fixed, int) and not isinstance(fixed, bool) and fixed >= 1),
                f"trainer.fixed_epochs={fixed} must be null (early stopping on validation) or an integer >= 1")
        for key in ("progress", "sparse_embeddings", "refit"):
            require(isinstance(values[key], bool), f"trainer.{key}={values[key]} must be true or false")
        require(not (values["sparse_embeddings"] and values["weight_decay"] > 0),
                f"trainer.sparse_embeddings=true cannot apply trainer.weight_decay={values['weight_decay']} to the "
                f"embedding tables (torch's SparseAdam has none); set trainer.weight_decay=0 or "
                f"trainer.sparse_embeddings=false")
        require(values["device"] in DEVICES, f"trainer.device={values['device']!r} is unknown; use one of {sorted(DEVICES)}")
        kind, reset = values.get("optimizer", "adam"), values.get("optimizer_reset", "never")
        require(kind in OPTIMIZERS, f"trainer.optimizer={kind!r} is unknown; use one of {sorted(OPTIMIZERS)}")
        require(reset in RESETS, f"trainer.optimizer_reset={reset!r} is unknown; use one of {list(RESETS)}")
        require(not (values["sparse_embeddings"] and kind != "adam"),
                f"trainer.sparse_embeddings=true needs trainer.optimizer=adam (SparseAdam), not {kind}")
        return cls(optimizer=str(kind), optimizer_reset=str(reset),
                   lr=float(values["lr"]), weight_decay=float(values["weight_decay"]),
                   batch_size=int(values["batch_size"]), max_epochs=int(values["max_epochs"]),
                   patience=int(values["patience"]), val_size=float(values["val_size"]), device=str(values["device"]),
                   progress=values["progress"], sparse_embeddings=values["sparse_embeddings"],
                   refit=values["refit"], fixed_epochs=None if fixed is None else int(fixed))


class ValidationLoss:
    """Early stopping on the model's loss over the validation rows (minimised): ``loss`` on the tensors
    in order, ``chunk`` rows at a time, each part averaged over the rows. ``monitor`` names the part
    that decides (``loss``: the total; neural MF: ``rating_loss``, as its L2 term is a training device)."""

    maximise = False

    def __init__(self, loss: LossFunction, tensors: Sequence[torch.Tensor], monitor: str = "loss",
                 chunk: int = 2048, stream: str = "rows"):
        self.loss, self.tensors, self.monitor, self.chunk, self.stream = loss, list(tensors), monitor, chunk, stream

    @torch.no_grad()
    def __call__(self, net: nn.Module) -> dict[str, float]:
        net.eval()
        n, sums, names = len(self.tensors[0]), None, None
        for start in range(0, n, self.chunk):
            part = Batch([t[start:start + self.chunk] for t in self.tensors], self.stream)
            total, parts = self.loss(net, part)
            names = names or [*parts, "loss"]
            values = torch.stack([*parts.values(), total]) * len(part[0])
            sums = values if sums is None else sums + values
        return dict(zip(names, (sums / n).tolist()))


class ValidationScore:
    """Early stopping on a score to maximise, e.g. a ranking metric of the model's predictions on the
    validation candidates: ``score(net) -> float``, logged as ``val_<name>``. ``also`` (a
    ``ValidationLoss``) is logged beside it every epoch, so the validation rating error the runner's
    divergence check and the report read stays in the history."""

    maximise = True

    def __init__(self, score: Callable[[nn.Module], float], name: str = "score", also: ValidationLoss | None = None):
        self.score, self.monitor, self.also = score, name, also

    @torch.no_grad()
    def __call__(self, net: nn.Module) -> dict[str, float]:
        values = self.also(net) if self.also is not None else {}
        net.eval()
        return {**values, self.monitor: float(self.score(net))}


Validation = ValidationLoss | ValidationScore


@dataclass
class FitResult:
    history: list[dict[str, float]]  # one row per early-stopping epoch: epoch, train_*/val_* values, epoch_seconds
    best_epoch: int
    batch_size: int                  # the batch and learning rate actually used (see Trainer.used_batch)
    lr: float
    refit_history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # the refit's epochs (train_*)

    @property
    def refitted(self) -> bool:
        return bool(self.refit_history)


class Prepared(NamedTuple):
    """What a model's ``setup(rows, part)`` builds for one phase of a fit: its network (seeded, on the
    trainer's device), the sampler over ``rows`` and, in the early-stopping phase, the validation
    callback on ``part.val`` (None in the refit phase: there is no held-out part)."""

    net: nn.Module
    sampler: Sampler
    validation: Validation | None


# ``setup(rows, part)``: build the model on ``rows`` (the fitting rows of ``part``, or the whole training
# part with ``part=None`` for the refit); see Trainer.train
Setup = Callable[[pd.DataFrame, Holdout | None], Prepared]


def history_frame(history: Sequence[Mapping[str, Any]], refit_history: Sequence[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """The ``training_history`` artifact: one row per epoch of both phases, ``phase`` first
    (``early_stopping`` rows, then ``refit`` rows; a refit row has no val_* values)."""
    rows = [{"phase": "early_stopping", **row} for row in history] + [{"phase": "refit", **row} for row in refit_history]
    return pd.DataFrame(rows)


def fit_diagnostics(history: Sequence[Mapping[str, Any]], refit_history: Sequence[Mapping[str, Any]], best_epoch: int,
                    best: tuple[str, Callable] | None = None, per_epoch: Callable = np.mean) -> dict[str, float]:
    """A trainer model's common diagnostics: epochs of each phase, the best epoch, ``per_epoch`` of the
    epoch seconds (the early-stopping phase's, or the refit's under ``trainer.fixed_epochs``) and, where
    there was an early-stopping phase, ``best = (column, max|min)`` of its history as ``best_<column>``."""
    epochs = history or refit_history
    return {"epochs_trained": float(len(history)), "best_epoch": float(best_epoch),
            **({f"best_{best[0]}": float(best[1](h[best[0]] for h in history))} if best and history else {}),
            "seconds_per_epoch": float(per_epoch([h["epoch_seconds"] for h in epochs])) if epochs else 0.0,
            **({"refit_epochs": float(len(refit_history))} if refit_history else {})}


def epoch_means(sums: dict[str, list]) -> dict[str, float]:
    """{name: mean per example} of one epoch from {stream: [names, summed values, examples]}. One stream
    (every model today): its sums divided on the device and read at once, the epoch's one host sync; a
    name several streams report is averaged over all their examples."""
    if len(sums) == 1:
        ((names, values, count),) = sums.values()
        return dict(zip(names, (values / count).tolist()))
    totals: dict[str, list[float]] = {}
    for names, values, count in sums.values():
        for name, mean in zip(names, (values / count).tolist()):
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += mean * count
            entry[1] += count
    return {name: total / count for name, (total, count) in totals.items()}


def effective_settings(model: Any) -> dict[str, Any]:
    """The values of a model's config keys that its fit trained with, keyed relative to its config
    (``{"trainer.batch_size": 111, "trainer.lr": 0.000542}``): a model that trains through a
    :class:`Trainer` holds it as ``model.trainer``, built from its config's ``trainer`` node
    (``trainer: ${trainer}``). {} for any other model, and before a fit. The runner logs these
    values as the run's params (benchmark/run/job.py), the configured ones stay in ``config.yaml``."""
    trainer = getattr(model, "trainer", None)
    if not isinstance(trainer, Trainer):
        return {}
    return {f"trainer.{key}": value for key, value in trainer.used.items()}


class Trainer:
    """Fits a network by minibatch Adam with early stopping (module docstring)."""

    # a batch leaves at least this many steps per epoch (Trainer.used_batch)
    MIN_STEPS = 32

    def __init__(self, config: TrainerConfig, seed: int, name: str, divergence_hint: str = ""):
        self.config = config
        self.seed = int(seed)
        self.name = name
        self.divergence_hint = divergence_hint  # e.g. "or model.lambda_profile (now 0.1)"
        self.device = resolve_device(config.device)
        self.used: dict[str, Any] = {}  # the settings the last fit trained with (Trainer.used_batch): batch_size, lr

    def validation(self, train: pd.DataFrame, context: FitContext) -> Holdout:
        """The early-stopping part of ``train``: the validation part of ``context.fold`` at
        ``trainer.val_size`` (round(val_size * n) of each user's n training ratings, at most n - 1,
        drawn with the run's seed: the split's per-user hold-out rule), carved by the fold once for
        every reader. A model fitted outside a job (no fold in the context) gets a fold of ``train``
        seeded with the model's seed: the same carve."""
        fold = context.fold if context.fold is not None else Fold.carved(train, self.seed)
        require(fold.train is train, f"{self.name}: FitContext.fold is not the fold of the frame passed to fit; "
                                     f"pass fold.train, or no fold")
        part = fold.validation(self.config.val_size)
        require(not part.empty,
                f"trainer.val_size={self.config.val_size} leaves no validation rows (every user has one "
                f"rating?); raise trainer.val_size or use more data")
        return part

    def early_stopping(self, loss: LossFunction, val: Sequence[torch.Tensor], context: FitContext, part: Holdout,
                       predict: Callable[[pd.DataFrame], np.ndarray], monitor: str = "loss") -> Validation:
        """The validation callback of a fit: the model's loss on ``val`` (the encoded ``part.val``), or,
        when ``context.ranking_metric`` is set, that metric of ``predict`` on ``part.val`` (maximised;
        the loss still logged beside it)."""
        on_loss = ValidationLoss(loss, val, monitor)
        metric = context.ranking_metric
        if metric is None:
            return on_loss
        candidates = part.val[["user", "item", "rating"]]
        return ValidationScore(lambda net: metric.score(candidates.assign(prediction=predict(candidates))),
                               metric.name, also=on_loss)

    def used_batch(self, n_rows: int) -> tuple[int, float]:
        """(batch size, learning rate) used on ``n_rows`` fitting rows. The configured batch is tuned for
        ML-100K; on a small dataset it would leave a handful of steps per epoch, so the batch shrinks to
        give at least MIN_STEPS steps and the learning rate follows it linearly (the linear scaling rule).
        ML-100K (72k rows) is unaffected; ITM-Rec (3.5k fitting rows) trains at batch 111. Both used values are
        the run's params (``effective_settings``) and metrics (``used_batch_size``, ``used_lr``)."""
        batch, lr = self.config.batch_size, self.config.lr
        used = min(batch, max(1, math.ceil(n_rows / self.MIN_STEPS)))
        return used, lr * used / batch

    def tensor(self, values, dtype: torch.dtype) -> torch.Tensor:
        """A copy on the trainer's device (pandas arrays are read-only, so always copy)."""
        return torch.tensor(np.asarray(values), dtype=dtype, device=self.device)

    def fit(self, net: nn.Module, loss: LossFunction, sampler: Sampler, validation: Validation,
            context: FitContext) -> FitResult:
        """Train ``net`` (already on ``self.device``) in place on the sampler's batches; on return it holds
        the weights of the epoch with the best ``val_<validation.monitor>`` (lowest, or highest for a
        score). Every random draw (the samplers') comes from one generator seeded with the trainer's seed."""
        # One intra-op thread: the layers are small, so a second thread costs more in synchronisation
        # than it saves (docs/performance.md); processes, not threads, parallelise sweeps.
        torch.set_num_threads(1)
        n = len(sampler)
        batch, lr = self.used_batch(n)
        if batch != self.config.batch_size:
            log.info("%s: %d fitting rows; batch %d -> %d and lr %g -> %g (at least %d steps per epoch)",
                     self.name, n, self.config.batch_size, batch, self.config.lr, lr, self.MIN_STEPS)
        context.log_metrics({"used_batch_size": float(batch), "used_lr": lr}, None)
        self.used = {"batch_size": batch, "lr": lr}
        optimizer = self.optimizers(net, lr)
        generator = torch.Generator().manual_seed(self.seed)  # the epochs' shuffles and negative draws
        monitor, sign = f"val_{validation.monitor}", -1.0 if validation.maximise else 1.0
        best, best_state, best_epoch, waited = math.inf, None, 0, 0
        history: list[dict[str, float]] = []
        bar = tqdm(range(1, self.config.max_epochs + 1), desc=f"{self.name} {context.dataset.name}", unit="epoch",
                   disable=not progress(self.config.progress), leave=False)
        for epoch in bar:
            started = time.perf_counter()
            row = self._epoch(net, loss, sampler, batch, generator, optimizer)
            row.update({f"val_{k}": v for k, v in validation(net).items()})
            self._check_finite(row, epoch)
            row["epoch_seconds"] = time.perf_counter() - started
            history.append({"epoch": epoch, **row})
            context.log_metrics(row, epoch)
            bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{row[monitor]:.4f}")
            if sign * row[monitor] < best - 1e-6:
                best, best_epoch, waited = sign * row[monitor], epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                waited += 1
                if waited >= self.config.patience:
                    break
        bar.close()
        optimizer.restore()
        net.load_state_dict(best_state)  # early stopping restores the best validation weights
        net.eval()
        log.info("%s: %d epochs, best epoch %d (%s %.4f)", self.name, len(history), best_epoch, monitor, sign * best)
        return FitResult(history, best_epoch, batch, lr)

    def refit(self, net: nn.Module, loss: LossFunction, sampler: Sampler, selected: FitResult,
              context: FitContext) -> FitResult:
        """Train ``net`` (freshly built and seeded by the model on the whole training part) for exactly
        ``selected.best_epoch`` epochs at the batch size and learning rate the early-stopping phase used,
        shuffled by a generator seeded as that phase's: deterministic for a seed. Nothing is held out,
        so there is no validation and no early stopping; every epoch is logged as ``refit_<name>``.
        Returns ``selected`` with the refit's epochs as ``refit_history``; ``net`` holds the last epoch's
        weights (the fitted model)."""
        torch.set_num_threads(1)
        epochs, batch, lr = selected.best_epoch, selected.batch_size, selected.lr
        optimizer = self.optimizers(net, lr)
        generator = torch.Generator().manual_seed(self.seed)
        history: list[dict[str, float]] = []
        bar = tqdm(range(1, epochs + 1), desc=f"{self.name} {context.dataset.name} refit", unit="epoch",
                   disable=not progress(self.config.progress), leave=False)
        for epoch in bar:
            started = time.perf_counter()
            row = self._epoch(net, loss, sampler, batch, generator, optimizer)
            self._check_finite(row, epoch, phase="refit ")
            row["epoch_seconds"] = time.perf_counter() - started
            history.append({"epoch": epoch, **row})
            context.log_metrics({f"refit_{k}": v for k, v in row.items()}, epoch)
            bar.set_postfix(train=f"{row['train_loss']:.4f}")
        bar.close()
        optimizer.restore()
        net.eval()
        log.info("%s: refitted on the whole training part (%d rows, fitting rows + validation part) for %d "
                 "epochs, the early-stopping phase's best epoch (trainer.refit=true)", self.name, len(sampler), epochs)
        return dataclasses.replace(selected, refit_history=history)

    def train(self, setup: Setup, loss: LossFunction, train: pd.DataFrame, context: FitContext) -> FitResult:
        """A torch model's whole fit, one path for every model and every caller (a job, a tuning trial,
        tuning's final run): ``setup(part.fit, part)`` builds the model on the fitting rows of the fold's
        validation part and early stopping on ``part.val`` picks the epoch count (``fit``); then, with
        ``trainer.refit`` (the default), ``setup(train, None)`` rebuilds it on the whole training part and
        ``refit`` trains it for that many epochs. ``trainer.refit=false``: the early-stopping weights."""
        if self.config.fixed_epochs is not None:  # a reproduction's epoch count: no validation, no early stopping
            whole = setup(train, None)
            batch, lr = self.used_batch(len(whole.sampler))
            self.used = {"batch_size": batch, "lr": lr}
            context.log_metrics({"used_batch_size": float(batch), "used_lr": lr}, None)
            log.info("%s: trainer.fixed_epochs=%d: trained that many epochs on the whole training part, no early "
                     "stopping (a reproduction of a reference protocol)", self.name, self.config.fixed_epochs)
            return self.refit(whole.net, loss, whole.sampler, FitResult([], self.config.fixed_epochs, batch, lr), context)
        part = self.validation(train, context)
        prepared = setup(part.fit, part)
        selected = self.fit(prepared.net, loss, prepared.sampler, prepared.validation, context)
        if not self.config.refit:
            return selected
        whole = setup(train, None)
        return self.refit(whole.net, loss, whole.sampler, selected, context)

    def optimizers(self, net: nn.Module, lr: float) -> Optimizers:
        return Optimizers(net, self.device, lr, self.config.weight_decay, self.config.sparse_embeddings,
                          self.config.optimizer)

    def _epoch(self, net: nn.Module, loss: LossFunction, sampler: Sampler, batch: int, generator: torch.Generator,
               optimizer: Optimizers) -> dict[str, float]:
        """One epoch over the sampler's batches: {train_<part>: mean per example, train_loss: ...}."""
        net.train()
        sums: dict[str, list] = {}  # stream -> [names, summed values (device), examples]
        reset, stream = self.config.optimizer_reset, None
        if reset == "epoch":
            optimizer.reset()
        for part in sampler.batches(batch, generator):
            if reset == "stream" and part.stream != stream:
                optimizer.reset()
                stream = part.stream
            total, parts = loss(net, part)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            values = torch.stack([*(p.detach() for p in parts.values()), total.detach()]) * len(part[0])
            entry = sums.get(part.stream)
            if entry is None:
                sums[part.stream] = [[*parts, "loss"], values, len(part[0])]
            else:
                entry[1].add_(values)
                entry[2] += len(part[0])
        return {f"train_{k}": v for k, v in epoch_means(sums).items()}

    def _check_finite(self, row: Mapping[str, float], epoch: int, phase: str = "") -> None:
        for key, value in row.items():
            if not math.isfinite(value):
                raise TrainingError(f"{self.name} {phase}epoch {epoch}: {key} is {value}; training diverged, lower "
                                    f"trainer.lr (now {self.config.lr}) {self.divergence_hint}".rstrip())
