"""trainer.optimizer and trainer.optimizer_reset (models/trainer.py): the reproductions of reference code
that builds a new RMSprop every epoch or phase (AGREE's, ConsRec's). The harness's default, one Adam for
the whole fit, is unchanged (and so are the config hashes of runs that keep it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models.trainer as trainer_module
from benchmark.core.errors import ConfigError
from models.samplers import Batch
from models.trainer import Optimizers, Trainer, TrainerConfig

BASE = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 2, "max_epochs": 2, "patience": 2, "val_size": 0.1,
        "device": "cpu", "progress": False, "sparse_embeddings": False, "refit": True}


class TwoStreams:
    """Two group batches, then two user batches (the sequential schedule's phases), one example each."""

    def __len__(self):
        return 4

    def batches(self, batch_size, generator):
        for stream in ("group", "group", "user", "user"):
            yield Batch([torch.ones(1, 2)], stream)


def _loss(net, batch):
    value = (net(batch[0]) - 3.0).pow(2).mean()
    return value, {}


def _epoch_states(reset: str, kind: str = "rmsprop") -> tuple[list[int], Optimizers]:
    """The optimizer's step count seen before each batch of one epoch (0 = a fresh optimizer)."""
    config = TrainerConfig.from_mapping({**BASE, "optimizer": kind, "optimizer_reset": reset})
    trainer = Trainer(config, seed=0, name="toy")
    net = nn.Linear(2, 1)
    optimizer = trainer.optimizers(net, 0.01)
    seen = []

    def loss(net_, batch):
        state = optimizer.all[0].state.get(net.weight, {})
        seen.append(int(state.get("step", 0)))
        return _loss(net_, batch)

    trainer._epoch(net, loss, TwoStreams(), 1, torch.Generator().manual_seed(0), optimizer)  # a first epoch
    seen.clear()
    trainer._epoch(net, loss, TwoStreams(), 1, torch.Generator().manual_seed(0), optimizer)
    return seen, optimizer


def test_never_keeps_the_state_across_epochs_and_streams():
    seen, optimizer = _epoch_states("never")
    assert seen == [4, 5, 6, 7] and isinstance(optimizer.all[0], torch.optim.RMSprop)


def test_epoch_starts_every_epoch_with_a_fresh_optimizer():
    seen, _ = _epoch_states("epoch")
    assert seen == [0, 1, 2, 3]


def test_stream_starts_every_phase_with_a_fresh_optimizer():
    seen, _ = _epoch_states("stream")
    assert seen == [0, 1, 0, 1]


def test_the_default_is_one_adam_for_the_whole_fit():
    config = TrainerConfig.from_mapping(BASE)   # the keys may be left out
    assert (config.optimizer, config.optimizer_reset) == ("adam", "never")
    optimizer = Trainer(config, seed=0, name="toy").optimizers(nn.Linear(2, 1), 0.01)
    assert isinstance(optimizer.all[0], torch.optim.Adam)


@pytest.mark.parametrize("key, value, message", [
    ("optimizer", "sgd", r"^trainer.optimizer='sgd' is unknown; use one of \['adam', 'rmsprop'\]$"),
    ("optimizer_reset", "batch", r"^trainer.optimizer_reset='batch' is unknown; use one of \['never', 'epoch', 'stream'\]$"),
])
def test_an_unknown_value_is_refused_in_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainerConfig.from_mapping({**BASE, key: value})


def test_sparse_embeddings_need_adam():
    with pytest.raises(ConfigError, match="sparse_embeddings=true needs trainer.optimizer=adam"):
        TrainerConfig.from_mapping({**BASE, "sparse_embeddings": True, "optimizer": "rmsprop"})


def test_a_default_run_keeps_its_config_hash_and_rmsprop_changes_it(make_cfg):
    from benchmark.core.config import config_hash
    base = config_hash(make_cfg("model=neural_mf"))
    assert config_hash(make_cfg("model=neural_mf", "trainer.optimizer=adam", "trainer.optimizer_reset=never")) == base
    assert len({base, config_hash(make_cfg("model=neural_mf", "trainer.optimizer=rmsprop")),
                config_hash(make_cfg("model=neural_mf", "trainer.optimizer_reset=epoch"))}) == 3


def test_rmsprop_trains(monkeypatch):
    """A reset optimizer still trains: the toy loss falls over a few epochs with a reset every phase."""
    config = TrainerConfig.from_mapping({**BASE, "optimizer": "rmsprop", "optimizer_reset": "stream"})
    trainer = Trainer(config, seed=0, name="toy")
    net = nn.Linear(2, 1)
    optimizer = trainer.optimizers(net, 0.05)
    losses = [trainer._epoch(net, _loss, TwoStreams(), 1, torch.Generator().manual_seed(0), optimizer)["train_loss"]
              for _ in range(5)]
    assert losses[-1] < losses[0]
    assert trainer_module.OPTIMIZERS["rmsprop"] is trainer_module.rmsprop
