"""A sweep's grids -> its jobs: each grid expanded as Hydra's basic sweeper expands one, every
job's config composed (cheaply: one full compose per set of config-group choices) and hashed, and
jobs with a config hash already planned dropped (grids are concatenated, not multiplied).

Apart from the sweeper (benchmark/sweeps/sweep.py), which launches and tracks the jobs: this part
needs only Hydra's public parser and a compose function, and its plan is what
``hydra.sweeper.dry_run=true`` prints.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from benchmark.core.config import config_hash, run_name
from benchmark.core.console import progress
from benchmark.core.errors import ConfigError
from benchmark.run.job import dataset_defaults


@dataclass
class Job:
    """One unique configuration of a sweep."""

    overrides: list[str]          # Hydra overrides that compose the job's config
    varies: dict[str, str]        # swept key -> value, the child run's ``varies`` tag (JSON)
    config_hash: str
    name: str                     # model/dataset/seedN, the child run's name


def _key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``; ``model=svd`` -> ``model``."""
    return override.split("=", 1)[0].lstrip("+~")


def _grid_overrides(grid: Mapping[str, Any]) -> list[str]:
    """A grid value may be Hydra's sweep string (``0,0.1,0.5``) or a YAML list."""
    items = []
    for key, values in grid.items():
        if isinstance(values, (list, tuple)) or OmegaConf.is_list(values):
            values = ",".join(str(v) for v in values)
        items.append(f"{key}={values}")
    return items


def expand(grid: Mapping[str, Any], arguments: Sequence[str], parser: OverridesParser) -> list[tuple[list[str], dict]]:
    """Cartesian product of one grid, command-line overrides winning per key: the rule of Hydra's
    basic sweeper (``BasicSweeper.split_arguments``), written here with the public ``Override`` API
    because the basic sweeper is in ``hydra._internal`` (tests/test_sweeps.py checks both agree)."""
    overrides = parser.parse_overrides(_grid_overrides(grid) + list(arguments))
    swept = {_key(o) for o in _grid_overrides(grid)}
    swept |= {o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()}
    values: dict[str, list[str]] = {}  # a later override of a key replaces its values, in the key's first place
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise ConfigError(f"{override.input_line}: a {override.value_type.name} sweep cannot be listed as jobs; "
                              f"use a list of values (a,b,c) or range(start,stop,step)")
        values[key] = ([f"{key}={value}" for value in override.sweep_string_iterator()]
                       if override.is_sweep_override() else [f"{key}={override.get_value_element_as_str()}"])
    jobs = []
    for combination in itertools.product(*values.values()):
        varies = {_key(o): o.split("=", 1)[1] for o in combination if _key(o) in swept}
        jobs.append((list(combination), varies))
    return jobs


def _plain(override: Override) -> bool:
    """``key=value``: not ``+key``, ``++key``, ``~key`` nor a ``key@package`` (those take Hydra's full compose)."""
    return override.package is None and not (override.is_add() or override.is_force_add() or override.is_delete())


class Composer:
    """Job configs for hashing: one full Hydra compose per set of config-group choices (model=...,
    dataset=...), then the plain value overrides applied as Hydra applies them after composing the
    defaults (``OmegaConf.update(cfg, key, value, merge=True)``). A full compose re-reads every
    YAML file (~0.1-0.3 s); the paper sweep's 230 jobs share 26 group choices. Anything else (an
    add, a delete, a key the config lacks) goes through the full compose, which raises Hydra's own
    error where there is one."""

    def __init__(self, compose, parser: OverridesParser, loader: ConfigLoader):
        self.compose = compose        # overrides -> config (a full Hydra compose)
        self.parser = parser
        self.loader = loader          # which keys are config groups (its public list_groups)
        self.groups: dict[str, set[str]] = {}
        self.cache: dict[tuple[str, ...], DictConfig] = {}

    def is_group(self, key: str) -> bool:
        """``model``, ``hydra/launcher``: a config group (``model.params.k`` is a value)."""
        parent, _, leaf = key.rpartition("/")
        if parent not in self.groups:
            try:
                self.groups[parent] = set(self.loader.list_groups(parent))
            except Exception:  # not a group folder: nothing under it is a group
                self.groups[parent] = set()
        return leaf in self.groups[parent]

    def __call__(self, overrides: list[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(overrides))
        is_group = [self.is_group(o.key_or_group) for o in parsed]
        groups = tuple(o.input_line for o, g in zip(parsed, is_group) if g)
        values = [o for o, g in zip(parsed, is_group) if not g]
        if not all(_plain(o) for o in values):
            return self.compose(list(overrides))
        if groups not in self.cache:
            self.cache[groups] = self.compose(list(groups))
        cfg = copy.deepcopy(self.cache[groups])
        try:
            for override in values:
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except Exception:  # let the full compose raise Hydra's own error for this job
            return self.compose(list(overrides))
        return cfg


def plan(grids: Mapping[str, Mapping[str, Any]], arguments: Sequence[str], parser: OverridesParser,
         compose) -> list[Job]:
    """Jobs of all grids in order, one per config hash (swept values of duplicates are merged)."""
    candidates = [job for grid in grids.values() for job in expand(grid, arguments, parser)]
    unique: dict[str, Job] = {}
    for overrides, varies in tqdm(candidates, desc="composing jobs", unit="job", leave=False,
                                  disable=len(candidates) < 50 or not progress()):
        cfg = dataset_defaults(compose(overrides))  # hashed as the job will run it (a group-item dataset's split)
        digest = config_hash(cfg)
        if digest in unique:
            for key, value in varies.items():
                unique[digest].varies.setdefault(key, value)
        else:
            unique[digest] = Job(overrides, dict(varies), digest, run_name(cfg))
    return list(unique.values())
