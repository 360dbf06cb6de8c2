"""Top-N recommendations from a logged run's saved model.

    python -m benchmark.recommend --run RUN_ID --user 42 --k 10
    python -m benchmark.recommend --run RUN_ID --group 7 --strategy least_misery

The run's ``model.pkl`` (saved by the runner, ``artifacts.save_model``) is loaded and its data
reloaded from the run's dataset config; the data's sha256 must equal the run's
``dataset_sha256`` tag. Candidates are the catalogue's items the user has not rated anywhere in
the dataset (training or test part); they are ranked by predicted rating, ties by the protocol's
tie rule (benchmark.protocol.ranking), as ``Recommender.rank`` does. For a group, the candidates
are the items no member has rated, scored by the group scores of the evaluation
(benchmark/evaluation/scoring.py): a group model's own (models.base.GroupScorer), else the
members' predicted ratings aggregated with ``--strategy`` (``mean``, ``least_misery`` = min,
``most_pleasure`` = max), and ranked by the same rule. The members
are the run's ``groups`` table (KMeans labels), or the dataset's real groups for a run with
``grouping=real``. The table goes to stdout; a bad run, user or group is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from benchmark.core.cli import ArgumentParser, whole
from benchmark.core.config import instantiate
from benchmark.core.errors import ConfigError, DataError, GroupbenchError, TrackingError
from benchmark.evaluation.base import Scorer
from benchmark.evaluation.scoring import AGGREGATIONS, group_scores_of
from benchmark.protocol.candidates import unique_members
from benchmark.protocol.ranking import order_rows
from benchmark.tracking.artifacts import download_table
from benchmark.tracking.saved_models import ARTIFACT, SHA256_TAG, deserialize
from benchmark.tracking.tracker import existing_store
from models.base import GroupScorer

log = logging.getLogger("benchmark.recommend")


@dataclass
class LoadedRun:
    run_id: str
    name: str
    config: object          # the run's resolved config (config.yaml)
    model: object           # the fitted Recommender
    dataset: object         # the run's data, reloaded and checked against its sha256
    artifact_dir: Path


def load_run(client, run_id: str, workdir: Path, data_root: str | None = None) -> LoadedRun:
    """The run's config, fitted model and data; one-line errors for a bad id or a missing model."""

    try:
        run = client.get_run(run_id)
    except Exception:
        raise TrackingError(f"run {run_id!r} not found in {client.tracking_uri}; copy a run id from the MLflow UI "
                            f"or pass --tracking-uri") from None
    if run.data.tags.get("groupbench.role", "job") != "job" or run.info.status != "FINISHED":
        raise ConfigError(f"run {run_id} is a {run.data.tags.get('groupbench.role')} run with status "
                          f"{run.info.status}; pick a FINISHED job run")
    names = {f.path for f in client.list_artifacts(run_id)}
    if ARTIFACT not in names:
        raise ConfigError(f"run {run_id} has no saved model ({run.data.tags.get('model_artifact', ARTIFACT + ' missing')}); "
                          f"rerun its configuration with artifacts.save_model=true")
    config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", str(workdir)))
    model = deserialize(Path(client.download_artifacts(run_id, ARTIFACT, str(workdir))).read_bytes(),
                        run.data.tags.get(SHA256_TAG), where=f"{ARTIFACT} of run {run_id}")
    root = data_root or None
    dataset = instantiate(config.dataset.loader, root=root if root is not None else config.data.root,
                          download=False, verify=True)
    expected = run.data.tags.get("dataset_sha256")
    if expected and dataset.sha256 != expected:
        raise DataError(f"the data read now (sha256 {dataset.sha256[:12]}...) is not the data run {run_id} was "
                        f"trained on ({expected[:12]}...); point --data-root at that data")
    return LoadedRun(run_id, run.info.run_name, config, model, dataset, workdir)


def catalogue(dataset) -> pd.Index:
    return pd.Index(dataset.item_features.index.unique().sort_values(), name="item")


def unseen_items(dataset, users) -> pd.Index:
    """Catalogue items none of ``users`` has rated (in the whole dataset)."""
    rated = dataset.ratings.loc[dataset.ratings["user"].isin(list(users)), "item"].unique()
    return catalogue(dataset).difference(pd.Index(rated))


def recommend_user(model, dataset, user, k: int, seed: int = 0) -> pd.DataFrame:
    """``rank, item, prediction``: the user's top-k unseen items by the model's score, ties by the
    protocol's rule seeded by ``seed`` (the run's: the same order its evaluation used)."""
    ranked = model.rank(user, unseen_items(dataset, [user]).to_numpy(), k=k, seed=seed)
    return ranked.drop(columns="user").assign(rank=range(1, len(ranked) + 1))


def group_members(run: LoadedRun, client, group) -> pd.DataFrame:
    """``group, user`` rows of one group: the dataset's real groups for grouping=real, else the run's groups table."""
    if str(run.config.grouping.get("_target_", "")).endswith(".real") and run.dataset.groups is not None:
        members = run.dataset.groups[["group", "user"]].drop_duplicates()
        where = "the dataset's real groups"
    else:
        labels = download_table(client, run.run_id, "groups", run.artifact_dir)  # Parquet or CSV
        members = labels[["group", "user"]]
        where = "the run's groups table"
    chosen = members[members["group"] == group]
    if chosen.empty:
        ids = sorted(members["group"].unique())
        raise ConfigError(f"group {group} is not among {where} (ids {ids[0]}..{ids[-1]}, {len(ids)} groups); "
                          f"pick one of them")
    return chosen.reset_index(drop=True)


def recommend_group(model, dataset, members: pd.DataFrame, k: int, strategy: str, seed: int = 0) -> pd.DataFrame:
    """``rank, item, prediction``: the group's top-k items no member rated, by the group's scores
    (the model's own, or its members' predictions aggregated by ``strategy``), ties by the
    protocol's rule seeded by ``seed``."""
    items = unseen_items(dataset, members["user"]).to_numpy()
    group = members["group"].iloc[0]
    scores_by = group_scores_of(Scorer(model), [strategy])
    ((rating, scores),) = scores_by.pairs(unique_members(members),
                                          pd.DataFrame({"group": group, "item": items})).values()
    top = order_rows(group, scores, items, seed)[:k]
    return pd.DataFrame({"item": items[top], "prediction": rating[top], "rank": range(1, len(top) + 1)})


def with_titles(table: pd.DataFrame, dataset) -> pd.DataFrame:
    titles = dataset.item_titles
    title = (titles.reindex(table["item"]).fillna("").to_numpy() if titles is not None
             else [f"item {item}" for item in table["item"]])
    return table.assign(title=title)[["rank", "item", "prediction", "title"]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m benchmark.recommend",
                            description="Top-N unseen items for a user or a group, from a run's saved model.")
    parser.add_argument("--run", required=True, help="MLflow run id of a FINISHED job run with a saved model")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="user id (as in the dataset)")
    who.add_argument("--group", type=int, help="group id (the run's groups table, or the real groups)")
    parser.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--strategy", default="mean", choices=sorted(AGGREGATIONS),
                        help="how a group's members' predictions become one score (default mean)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--data-root", default=None, help="data folder; default: $GROUPBENCH_DATA, else the run's data.root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import os

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow.tracking import MlflowClient

        args = parse_args(argv)  # a bad argument is one line too (benchmark.core.cli)
        whole("--k", args.k)
        uri = existing_store(args.tracking_uri)
        client = MlflowClient(tracking_uri=uri)
        with tempfile.TemporaryDirectory() as tmp:
            run = load_run(client, args.run, Path(tmp), args.data_root or os.environ.get("GROUPBENCH_DATA"))
            dataset = run.dataset
            if args.user is not None:
                if args.user not in set(dataset.user_features.index):
                    raise ConfigError(f"user {args.user} is not a user of {dataset.name} ({len(dataset.user_features)} "
                                      f"users, ids {dataset.user_features.index.min()}..{dataset.user_features.index.max()})")
                table = recommend_user(run.model, dataset, args.user, args.k, int(run.config.seed))
                n_rated = int((dataset.ratings["user"] == args.user).sum())
                header = (f"top {len(table)} for user {args.user} ({n_rated} items rated, "
                          f"{len(unseen_items(dataset, [args.user]))} unseen candidates)")
            else:
                members = group_members(run, client, args.group)
                table = recommend_group(run.model, dataset, members, args.k, args.strategy, int(run.config.seed))
                how = "the model's own group scores" if isinstance(run.model, GroupScorer) else args.strategy
                header = (f"top {len(table)} for group {args.group} ({len(members)} members: "
                          f"{', '.join(str(u) for u in members['user'].head(12))}{' ...' if len(members) > 12 else ''}; "
                          f"{len(unseen_items(dataset, members['user']))} items no member rated; {how})")
    except GroupbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{header}\nrun {run.run_id} ({run.name}), model {run.config.model.name}, dataset {dataset.name}")
    if table.empty:
        print("no candidate left: every catalogue item has been rated")
        return 0
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        shown = with_titles(table, dataset)
        width = int(shown["title"].str.len().max()) if len(shown) else 0
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}",
                              formatters={"title": lambda t: f"{t:<{width}}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
