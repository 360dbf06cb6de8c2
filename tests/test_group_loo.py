"""``split=group_loo`` (benchmark/protocol/group_split.py, ``group_loo``): the seeded leave-one-out
re-split of the group-item datasets with negatives, and ``+sweep=groups`` (conf/sweep/groups.yaml)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from benchmark.core.errors import ConfigError
from benchmark.data.base import Dataset
from benchmark.protocol.group_split import group_loo
from tests import test_group_protocol as protocol

SINGLES = 10  # groups 0..9 keep only their test positive: one positive, no hold-out


@pytest.fixture(scope="module")
def data() -> Dataset:
    base = protocol.generated(n_groups=600, leaks=40)
    item = base.group_item
    train = item.group_train[item.group_train["group"] >= SINGLES]
    return dataclasses.replace(base, group_item=dataclasses.replace(item, group_train=train))


def pool(data: Dataset) -> set[tuple[int, int]]:
    item = data.group_item
    return {(int(g), int(i)) for f in (item.group_train, item.group_test) for g, i in f[["group", "item"]].to_numpy()}


def pairs(frame) -> list[tuple[int, int]]:
    return [(int(g), int(i)) for g, i in frame[["group", "item"]].to_numpy()]


def fold(data: Dataset, seed: int):
    (split,) = group_loo(data.ratings, seed=seed, dataset=data)
    return split.group


def test_one_positive_is_held_out_per_group_with_at_least_two(data):
    loo = fold(data, 0)
    known = pool(data)
    assert loo.test["group"].is_unique and len(loo.test) == 600 - SINGLES
    assert set(loo.test["group"]) == set(range(SINGLES, 600))
    assert set(pairs(loo.test)) <= known
    assert len(loo.train) + len(loo.test) == len(known)  # every pooled pair once: held out or training
    assert loo.label == "group_loo" and not loo.legacy and loo.stats["loo"] == 1.0


def test_held_out_rows_are_not_in_training(data):
    loo = fold(data, 0)
    held = set(pairs(loo.test))
    assert not held & set(pairs(loo.train))
    assert not held & set(pairs(loo.fit)) and not held & set(pairs(loo.val))
    assert len(loo.fit) + len(loo.val) == len(loo.train)


def test_negatives_avoid_every_known_positive_and_repeat_no_item(data):
    loo = fold(data, 0)
    known = pool(data)
    assert loo.negatives.shape == (len(loo.test), 100)
    assert loo.negatives.min() >= 0 and loo.negatives.max() < loo.n_items
    assert not any((int(g), int(i)) in known for g, row in zip(loo.test["group"], loo.negatives) for i in row)
    assert all(len(set(row)) == 100 for row in loo.negatives.tolist())
    assert not any((int(g), int(i)) in known for g, row in zip(loo.val["group"], loo.val_negatives) for i in row)


def test_the_seed_decides_the_held_out_items(data):
    first, again, other = fold(data, 0), fold(data, 0), fold(data, 1)
    assert first.test.equals(again.test) and np.array_equal(first.negatives, again.negatives)
    assert first.train.equals(again.train)
    assert (first.test["item"].to_numpy() != other.test["item"].to_numpy()).mean() > 0.5


def test_data_without_negatives_is_refused_in_one_line():
    base = protocol.generated(n_groups=50)
    without = dataclasses.replace(base, group_item=dataclasses.replace(base.group_item, group_negatives=None))
    with pytest.raises(ConfigError) as refused:
        group_loo(without.ratings, seed=0, dataset=without)
    message = str(refused.value)
    assert "split=group_loo" in message and "split=ephemeral" in message and "\n" not in message


@pytest.mark.slow
def test_a_narrowed_groups_sweep_runs_its_jobs(tmp_path):
    if not protocol.camra_present():
        pytest.skip("CAMRa2011 files not under the data root")
    proc = protocol.cli(tmp_path, "+sweep=groups", "dataset=camra2011", "seed=0", "model=popularity_group,random")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 jobs: 4 finished, 0 failed, 0 skipped" in proc.stdout, proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    jobs = client.search_runs([client.get_experiment_by_name("groups").experiment_id], "tags.`groupbench.role` = 'job'")
    assert len(jobs) == 4 and all(job.info.status == "FINISHED" for job in jobs)
    assert sorted(job.data.tags["group_split"] for job in jobs) == ["corrected", "corrected", "group_loo", "group_loo"]
    loo = [job for job in jobs if job.data.tags["group_split"] == "group_loo"]
    assert all(job.data.metrics["group_split_legacy"] == 0.0 and job.data.metrics["group_split_n_test_cases"] == 290
               for job in loo)
