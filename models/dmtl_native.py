"""DMTL's training step as one compiled CPU call (``models/dmtl_native.cpp``), built on first use.

The same network, losses, gradients and Adam update as the eager fused step (``models/dmtl_fused.py``),
with every element-wise part fused into loops that run while the rows are still in cache, the matrix
products through ATen (MKL), and whole epochs and validation passes without returning to Python:
1.5-2.5x less time per epoch than the eager fused step on the 2-core CPU this harness is measured on
(docs/performance.md). Its dropout masks come from its own counter-based generator (keyed by the
seeded torch generator), so they differ from the fused step's: see docs/protocol.md, "Training step".

The extension is compiled with ``torch.utils.cpp_extension`` the first time a process needs it
(~30 s, needs a C++ compiler and ninja) and cached under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), so later processes load it in well under a second. ``trainer.step=auto``
(default) uses it on CPU when it builds and falls back to the eager fused step otherwise, logging why;
``trainer.step=native`` refuses to run without it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from models.dmtl_fused import dropout_constants, flatten_parameters

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".cpp")
ACTIVATION_CODES = {"relu": 0, "gelu": 1, "tanh": 2, "sigmoid": 3, "elu": 4, "leaky_relu": 5}
ATTENTION_CODES = {"none": 0, "softmax": 1, "uniform": 2}
# -march=native: the build is for this CPU, so the cache key names the CPU (a home directory shared
# by machines with different CPUs gets one build per CPU, never an illegal instruction)
# -fno-math-errno: lets sqrt / exp vectorise (torch itself is built with it); NaN and inf still propagate
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]


class NativeUnavailable(RuntimeError):
    """The extension could not be built or loaded here (no compiler, no ninja, build error)."""


def _cpu_key() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor() or platform.machine()
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


STALE_LOCK_SECONDS = 600  # a build takes ~30 s; a lock this old was left by a killed build


def remove_stale_lock(build_directory: Path, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """torch's build lock outlives a build that was killed (Ctrl-C during the first ~30 s), and every
    later load then waits on it forever. Remove a lock older than ``max_age`` seconds -> removed?"""
    lock = build_directory / "lock"
    try:
        if time.time() - lock.stat().st_mtime < max_age:
            return False
        lock.unlink()
    except FileNotFoundError:
        return False
    log.warning("DMTL: removed a stale build lock %s (left by an interrupted build)", lock)
    return True


@functools.lru_cache(maxsize=1)
def _load() -> ModuleType | NativeUnavailable:
    from torch.utils import cpp_extension  # imports setuptools machinery: only when needed
    if shutil.which("ninja") is None:  # the pip package's binary, when the venv is not activated
        try:
            import ninja
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass  # load() then fails with torch's own "Ninja is required" message
    log.info("DMTL: loading the compiled training step (the first use on a machine builds it, ~30 s)")
    name = f"groupbench_dmtl_native_{_cpu_key()}"
    try:  # torch's own build-directory rule (a private helper of the pinned torch): best effort only
        remove_stale_lock(Path(cpp_extension._get_build_directory(name, verbose=False)))
    except (AttributeError, OSError, TypeError) as error:
        log.debug("DMTL: no stale-lock check (%s)", error)
    try:
        return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, verbose=False)
    except Exception as error:  # compiler or ninja missing, build failure: the caller decides
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = next((line for line in lines if "error" in line.lower() and "Error building" not in line), lines[0])
        return NativeUnavailable(f"the compiled DMTL step (models/dmtl_native.cpp) could not be built: {reason}")


def extension() -> ModuleType:
    """The compiled module; builds it on the first call of a process. Raises NativeUnavailable."""
    loaded = _load()
    if isinstance(loaded, NativeUnavailable):
        raise loaded
    return loaded


def supports(device: torch.device) -> bool:
    """Whether the compiled step can train on this device at all (CPU; float32/64 checked by Step)."""
    return device.type == "cpu"


class NativeTrainingStep:
    """``step(user, item, xu, xi, rating, group)`` does forward, loss, backward and Adam on one batch in one
    compiled call and returns its (rating loss, profiling loss) as a (2,) tensor; ``epoch(data, order,
    batch)`` runs a whole epoch of such steps over a permutation without copying the shuffled data;
    ``evaluate(data)`` returns the mean losses of any number of rows without dropout or update."""

    def __init__(self, net: nn.Module, lambda_profile: float, lr: float, weight_decay: float,
                 dropout: float, activation: str, attention: str, generator: torch.Generator, max_rows: int):
        module = extension()
        self.net = net
        self.generator = generator
        self.dropout, drop_threshold, keep_scale = dropout_constants(dropout)
        flat, self.grads = flatten_parameters(net)
        empty = torch.empty(0, dtype=flat.dtype)
        layers = [net.user_projection, net.item_projection, net.attention_layer, net.shared, net.profile_head,
                  net.rating_head]
        params = [net.user_embedding.weight, net.item_embedding.weight]
        for layer in layers:  # no attention layer (attention none / uniform): placeholders, never read
            params += [layer.weight, layer.bias] if layer is not None else [empty, empty]
        self.step = module.Step(
            [p.data for p in params], [p.grad if p.numel() else empty for p in params], flat, self.grads,
            int(max_rows), float(lambda_profile), net.low, net.span, self.dropout, keep_scale, drop_threshold,
            ACTIVATION_CODES[activation], ATTENTION_CODES[attention], float(lr), float(weight_decay),
            0.9, 0.999, 1e-8)  # torch.optim.Adam's betas and eps

    def __call__(self, user: torch.Tensor, item: torch.Tensor, xu: torch.Tensor, xi: torch.Tensor,
                 rating: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(user), device=user.device)  # per-row features: row r reads table row r
        records = self.step.pack([user, item, rows, rows, rating, group], xu, xi)
        return self.step.train(records, xu, xi, self.generator)

    def dropout_draws(self, rows: int) -> torch.Tensor:
        """(rows, shared width) int16 draws, as the next step of ``rows`` rows would draw them (a unit is
        kept iff its draw > the threshold of ``models.dmtl_fused.dropout_constants``); advances the generator."""
        return self.step.dropout_draws(int(rows), self.generator)

    def pack(self, data: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_Encoded.indexed()`` (user, item, user_feature, item_feature, rating, group, user_table,
        item_table) -> (records, user_table, item_table): one 64-byte record per row, every index checked."""
        *columns, user_table, item_table = data
        return self.step.pack(columns, user_table, item_table), user_table, item_table

    def epoch(self, packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor], order: torch.Tensor,
              batch: int) -> torch.Tensor:
        """One epoch over ``pack``'s rows in ``order``, ``batch`` rows a step -> mean (rating, profiling) loss."""
        return self.step.train_epoch(*packed, order, int(batch), self.generator)

    def evaluate(self, packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean (rating, profiling) loss of ``pack``'s rows, no dropout, no update."""
        return self.step.evaluate(*packed)
