"""The config hash covers every key that decides a result (#23 item 3): with the data's sha256 it is
the key a sweep resumes and dedupes by, and a tuned job's study key builds on it.

conf/config.yaml is composed with every dataset (with DMTL) and every model (and, for the models with a
search space, tuning on); every leaf key of the composed config is perturbed in turn, and the hash must change
exactly when the key is not deliberately excluded (``HASH_EXCLUDED`` below, each with its reason).
A new config key is therefore in the hash unless someone adds it here with a reason.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

import benchmark.core.config as core_config
import benchmark.sweeps.tune as tune
from benchmark.core.config import config_hash
from benchmark.tracking.tracker import Tracker

CONF = Path(__file__).resolve().parent.parent / "conf"
DATASETS = sorted(path.stem for path in (CONF / "dataset").glob("*.yaml"))
MODELS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
TUNED = sorted(path.stem for path in (CONF / "search").glob("*.yaml"))

# Keys deliberately NOT in the config hash, and why (a key ending in "." covers its subtree). Each must
# leave the hash unchanged when perturbed (checked below), so this list is exactly what is left out.
HASH_EXCLUDED = {
    "resume": "sweep bookkeeping: whether a sweep skips jobs that already finished",
    "verbose": "how many lines the console shows (benchmark/core/console.py)",
    "data.root": "where the files are read from; what they hold is the data's sha256, the resume key's other half",
    "data.download": "fetches missing files (checksummed): the same files, the same data sha256",
    "data.verify": "refuses files whose sha256 differs from the pinned one; the sha256 of the files read is "
                   "in the resume key (dataset_sha256) either way",
    "cache.": "the protocol cache is never stale (keyed by the data and the configs it depends on): a job "
              "computes the same with it, without it, or with another folder",
    "artifacts.": "which tables and model pickle are written, and their format: no metric depends on them",
    "tracking.": "where the run is logged",
    "trainer.progress": "a progress bar",
    "dataset.feedback": "whether the dataset's files hold ratings (implicit or explicit): a fact about the data, "
                        "whose sha256 is the resume key's other half; it decides which models may run, not a result",
    "model.meta.": "how reports name and group the model (display name, swept columns, published numbers); "
                   "never passed to the model (benchmark.core.config.build_model)",
}
# Keys left out only in some configurations (checked below in those configurations):
CONDITIONAL = {
    "trainer.": "read only by the torch models (model.trainer: ${trainer}); another model never reads it, "
                "so it does not change that model's result",
    "tune.": "read only by a job that tunes (tune.enabled=true and a search space conf/search/<model>.yaml); "
             "with tuning off (or nothing to tune) it changes nothing, and the hash of every untuned run stays "
             "what it was",
    "eval.authors.": "read only under eval.protocol=authors|authors_metrics (issue #26); the clean protocol never "
                     "reads it, and the hash of every clean run stays what it was",
    "eval.mask_member_items": "read only by the held-out groups' evaluator, under split=ephemeral (Weeplaces); on "
                              "any other split it changes nothing",
}
ALIAS = re.compile(r"^\$\{([a-z_][\w.]*)\}$")  # a node that is another config node (model.trainer: ${trainer})


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _perturbed(value: Any) -> Any:
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.125
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, value[0]] if value else ["other"]
    if value is None:
        return 7
    raise AssertionError(f"no perturbation for {value!r}")


def _excluded(key: str, cfg: DictConfig) -> str | None:
    """Why ``key`` is deliberately not in ``cfg``'s hash, or None when it must be."""
    for name, reason in HASH_EXCLUDED.items():
        if key == name or (name.endswith(".") and key.startswith(name)):
            return reason
    if key.startswith("trainer.") and "trainer" not in cfg.model:
        return CONDITIONAL["trainer."]
    if key.startswith("eval.authors.") and cfg.eval.get("protocol", "clean") == "clean":
        return CONDITIONAL["eval.authors."]
    if key == "eval.mask_member_items" and cfg.split.get("_target_") != "benchmark.protocol.group_split.ephemeral":
        return CONDITIONAL["eval.mask_member_items"]
    has_space = (CONF / "search" / f"{cfg.model.name}.yaml").is_file()
    if key.startswith("tune.") and not (cfg.tune.enabled and has_space):
        if key == "tune.enabled" and has_space:
            return None  # turning tuning on for a model with a search space does change the job
        return CONDITIONAL["tune."]
    return None


def _wrong(cfg: DictConfig) -> list[str]:
    """Every leaf key whose perturbation does not do what HASH_EXCLUDED / CONDITIONAL say."""
    base = config_hash(cfg)
    raw = _leaves(OmegaConf.to_container(cfg, resolve=False))
    resolved = _leaves(OmegaConf.to_container(cfg, resolve=True))
    problems = []
    for key, value in raw.items():
        if isinstance(value, str) and ALIAS.match(value):
            target = ALIAS.match(value).group(1)
            assert any(k == target or k.startswith(target + ".") for k in raw), f"{key} -> {target}: not enumerated"
            continue  # an alias: its target's keys are perturbed themselves
        changed = copy.deepcopy(cfg)
        with open_dict(changed):
            OmegaConf.update(changed, key, _perturbed(resolved[key]), merge=False, force_add=True)
        moved = config_hash(changed) != base
        reason = _excluded(key, cfg)
        if moved and reason is not None:
            problems.append(f"{key}: changes the hash, but is listed as excluded ({reason})")
        if not moved and reason is None:
            problems.append(f"{key}: decides a result but does not change the hash")
    return problems


def _home(model: str) -> str:
    """A dataset the model runs on: camra2011 for a model that needs a group split, else ml100k."""
    text = (CONF / "model" / f"{model}.yaml").read_text()
    return "camra2011" if re.search(r"^\s*group_item_only:\s*true", text, re.M) else "ml100k"


# Every dataset with one torch model (its trainer keys) and every model, untuned and tuned, on one dataset
# it runs on: no rule depends on the pairing of a dataset with a model (the exclusions read the model and
# tune.enabled only), so this covers every key of every composed config at a sixth of the cost of the
# full cross product (which took 170 s in CI).
CASES = ([(dataset, "dmtl", ()) for dataset in DATASETS]
         + [(_home(model), model, ()) for model in MODELS]
         + [(_home(model), model, ("tune.enabled=true",)) for model in TUNED if model in MODELS])


@pytest.mark.slow
@pytest.mark.parametrize("dataset,model,extra", CASES, ids=[f"{d}-{m}{'-tuned' if e else ''}" for d, m, e in CASES])
def test_every_result_deciding_key_changes_the_hash(dataset, model, extra):
    cfg = _compose(f"dataset={dataset}", f"model={model}", *extra)
    problems = _wrong(cfg)
    assert not problems, "\n".join(problems)


def test_tuning_settings_and_search_space_are_in_a_tuned_jobs_key(tmp_path, monkeypatch):
    """The sweeper's resume key: a tuned job is not the untuned run of its config, and a change of
    tune.trials / tune.metric / the search space is another job (each was skipped as done before #23)."""
    untuned = config_hash(_compose("model=svd"))
    tuned = config_hash(_compose("model=svd", "tune.enabled=true"))
    assert len({untuned, tuned, config_hash(_compose("model=svd", "tune.enabled=true", "tune.trials=3")),
                config_hash(_compose("model=svd", "tune.enabled=true", "tune.metric=val_mae"))}) == 4
    # an untuned job keeps the hash it had before tune.* joined the key (its finished runs still count)
    assert config_hash(_compose("model=svd", "tune.trials=3")) == untuned
    # slope_one has no search space: tuning it is running it once, the same job
    assert config_hash(_compose("model=slope_one", "tune.enabled=true")) == config_hash(_compose("model=slope_one"))
    # the search space is a file, not a config key: an edited one is another job too
    search = tmp_path / "search"
    search.mkdir()
    (search / "svd.yaml").write_text((CONF / "search" / "svd.yaml").read_text()
                                     + "\nmodel.params.init_std_dev: {type: float, low: 0.01, high: 0.3}\n")
    monkeypatch.setattr(core_config, "SEARCH_DIR", search)
    assert config_hash(_compose("model=svd", "tune.enabled=true")) != tuned


def test_a_study_on_edited_data_is_another_study(make_cfg, data_copy, tmp_path):
    """The study key holds the data's sha256: a tuned job on edited files (same config) runs its own
    trials instead of resuming the other data's ("2 of 2 trials already FINISHED, resuming")."""
    overrides = ("dataset=itmrec", "grouping=real", "model=svd", "tune.enabled=true", "tune.trials=2",
                 f"data.root={data_copy}", "data.verify=false", "cache.enabled=false")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tuned")
    first = tune.run_study(make_cfg(*overrides), tracker)
    assert first.trials_run == 2
    ratings = data_copy / "itm-rec" / "ratings.csv"
    lines = ratings.read_text().splitlines(keepends=True)
    for n in range(1, 200):  # a few ratings changed: other data, the same config
        fields = lines[n].split(",")
        fields[2] = "1" if fields[2].strip() != "1" else "5"
        lines[n] = ",".join(fields)
    ratings.write_text("".join(lines))
    edited = tune.run_study(make_cfg(*overrides), tracker)
    assert edited.trials_run == 2 and edited.key != first.key
    assert tune.run_study(make_cfg(*overrides), tracker).trials_run == 0  # the same data again: resumed


def test_mask_member_items_changes_the_hash_on_ephemeral_groups_only():
    from benchmark.run.job import dataset_defaults
    hashes = {dataset: [config_hash(dataset_defaults(_compose(f"dataset={dataset}", "model=popularity_group", *mask)))
                        for mask in ((), ("eval.mask_member_items=true",))]
              for dataset in ("weeplaces", "camra2011")}
    assert hashes["weeplaces"][0] != hashes["weeplaces"][1]   # Weeplaces: masked is another experiment
    assert hashes["camra2011"][0] == hashes["camra2011"][1]   # CAMRa2011: nothing reads the key
