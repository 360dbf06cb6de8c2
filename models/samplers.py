"""Where the trainer's batches come from: a sampler turns training examples into one epoch of batches.

The trainer (models/trainer.py) asks ``sampler.batches(batch_size, generator)`` once per epoch and
hands every batch to the model's loss; it knows neither the model nor the sampler's kind:

  * ``RowSampler``: rows of tensors in one seeded permutation per epoch (pointwise losses: the
    rating MSE, DMTL's profiling target). Its batches are the rows and RNG draws the trainer made
    before samplers existed, so DMTL and neural MF train to the bit as they did;
  * ``PairwiseSampler``: (query, positive item, k negatives) for pairwise losses such as BPR; the
    query is a user or a group, negatives are drawn uniformly from the items the query has no known
    positive for (vectorised rejection sampling, seeded by the trainer's generator);
  * ``Interleaved``: several named streams (user-item and group-item) in one epoch, alternating,
    in a seeded proportional order, or one stream after the other; each stream draws from its own generator seeded from the
    trainer's, so a stream's batches do not depend on the schedule.

A ``Batch`` is a list of tensors (one row per example, so a loss unpacks it) that also names its
stream: a model trained on two streams picks its loss by ``batch.stream``.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from benchmark.core.errors import require


class Batch(list):
    """Tensors with one row per example (``len(batch[0])`` examples) from the stream ``stream``."""

    def __init__(self, tensors: Sequence[torch.Tensor], stream: str = "rows"):
        super().__init__(tensors)
        self.stream = stream


@runtime_checkable
class Sampler(Protocol):
    def __len__(self) -> int:
        """Examples per epoch: the trainer sizes its batch by it and averages the epoch's losses over it."""
        ...

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of batches of at most ``batch_size`` examples, every draw from ``generator``."""
        ...


def n_batches(sampler: Sampler, batch_size: int) -> int:
    return math.ceil(len(sampler) / batch_size)


class RowSampler:
    """Every row once per epoch, in one seeded permutation (``torch.randperm`` on ``generator``), a batch
    gathered per step (``index_select``): the same rows in the same order as slices of a shuffled copy
    of the tensors, without building that copy."""

    def __init__(self, tensors: Sequence[torch.Tensor], stream: str = "rows"):
        require(len(tensors) > 0 and all(len(t) == len(tensors[0]) for t in tensors),
                "RowSampler needs tensors with one row per example, all of the same length")
        self.tensors = list(tensors)
        self.stream = stream

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.tensors[0].device)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            yield Batch([t.index_select(0, rows) for t in self.tensors], self.stream)


class PairwiseSampler:
    """Batches of (query, positive, negatives (b, k)) plus any ``extra`` per-positive tensors.

    Every (query, positive) pair appears once per epoch in a seeded permutation. Negatives are items
    in ``[item_offset, item_offset + n_items)`` the query has no known positive for (``known``: the
    (query, item) pairs to avoid, default the positives themselves), uniform over them: drawn
    uniformly over all items, and every draw that hits a known positive is drawn again (rejection
    sampling: exactly uniform over the allowed items, vectorised, a handful of rounds in practice).
    All of an epoch's negatives are drawn at once, after its permutation, from the same generator.
    """

    def __init__(self, query: torch.Tensor, positive: torch.Tensor, n_items: int, negatives: int = 1,
                 item_offset: int = 0, known: tuple[torch.Tensor, torch.Tensor] | None = None,
                 extra: Sequence[torch.Tensor] = (), stream: str = "pairs"):
        require(len(query) == len(positive) > 0, "PairwiseSampler needs as many queries as positives (at least one)")
        require(isinstance(negatives, int) and negatives >= 1, f"negatives={negatives} must be an integer >= 1")
        self.query, self.positive, self.extra = query, positive, list(extra)
        self.n_items, self.k, self.offset, self.stream = int(n_items), negatives, int(item_offset), stream
        known_query, known_item = known if known is not None else (query, positive)
        local = known_item.cpu().long() - self.offset
        require(bool(((local >= 0) & (local < self.n_items)).all()),
                f"known items must lie in [{self.offset}, {self.offset + self.n_items})")
        # one sorted int64 key per known (query, item) pair: membership is a binary search
        self.keys = torch.unique(known_query.cpu().long() * self.n_items + local)  # sorted
        per_query = np.bincount((self.keys // self.n_items).numpy())
        full = np.flatnonzero(per_query >= self.n_items)
        require(len(full) == 0, f"queries {full[:5].tolist()} have every item as a known positive: "
                                f"no negative can be drawn for them")

    def __len__(self) -> int:
        return len(self.query)

    def is_known(self, query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (query, item) (items: (b, k), absolute ids) is a known positive."""
        keys = query.cpu().long()[:, None] * self.n_items + (items.cpu().long() - self.offset)
        if len(self.keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        at = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        return self.keys[at] == keys

    def draw_negatives(self, query: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(len(query), k) items, none a known positive of its row's query, uniform over the others."""
        items = torch.randint(0, self.n_items, (len(query), self.k), generator=generator) + self.offset
        bad = self.is_known(query, items)
        while bool(bad.any()):
            items[bad] = torch.randint(0, self.n_items, (int(bad.sum()),), generator=generator) + self.offset
            bad = self.is_known(query, items)
        return items

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        n, device = len(self), self.query.device
        order = torch.randperm(n, generator=generator)
        query = self.query.index_select(0, order.to(device))
        negatives = self.draw_negatives(query, generator).to(device)
        positive = self.positive.index_select(0, order.to(device))
        extra = [t.index_select(0, order.to(t.device)) for t in self.extra]
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            yield Batch([query[part], positive[part], negatives[part], *(t[part] for t in extra)], self.stream)


class Interleaved:
    """Several named streams in one epoch.

    ``schedule="alternate"``: one batch of each stream in turn (in the given order) while a stream has
    batches left, then the longer streams' remaining batches. ``"proportional"``: every stream's batches
    spread over the epoch in a seeded random order, so that any stretch of the epoch holds the streams
    roughly in proportion to their sizes. Each stream keeps its own batch order, drawn from its own
    generator (seeded from the trainer's once per epoch), so a stream's batches are the same whatever
    the schedule and the other streams. ``"sequential"``: every batch of the first stream, then every
    batch of the next (a reference code that trains one phase per stream per epoch, e.g. ConsRec's
    group phase then user phase).
    """

    SCHEDULES = ("alternate", "proportional", "sequential")

    def __init__(self, streams: Mapping[str, Sampler], schedule: str = "alternate"):
        require(len(streams) >= 1, "Interleaved needs at least one stream")
        require(schedule in self.SCHEDULES, f"schedule={schedule!r} is unknown; use one of {self.SCHEDULES}")
        self.streams, self.schedule = dict(streams), schedule

    def __len__(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def order(self, batch_size: int, generator: torch.Generator) -> list[str]:
        """The stream of each of the epoch's batches, in order (draws from ``generator`` when proportional)."""
        counts = {name: n_batches(s, batch_size) for name, s in self.streams.items()}
        if self.schedule == "alternate":
            names, left = [], dict(counts)
            while any(left.values()):
                for name in self.streams:
                    if left[name]:
                        names.append(name)
                        left[name] -= 1
            return names
        labels = [name for name, count in counts.items() for _ in range(count)]
        if self.schedule == "sequential":
            return labels
        return [labels[i] for i in torch.randperm(len(labels), generator=generator).tolist()]

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        seeds = torch.randint(0, 2**62, (len(self.streams),), generator=generator).tolist()
        iterators = {name: iter(stream.batches(batch_size, torch.Generator().manual_seed(seed)))
                     for (name, stream), seed in zip(self.streams.items(), seeds)}
        for name in self.order(batch_size, generator):
            batch = next(iterators[name])
            batch.stream = name
            yield batch
