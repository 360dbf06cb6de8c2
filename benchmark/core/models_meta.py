"""What reports and run names know about each model: the ``meta:`` block of ``conf/model/<name>.yaml``.

Generic code (the report, run names, version tags) never names a model; it asks this module. No
result depends on ``meta``: ``config_hash`` drops ``model.meta``, runs do not log it as params, and
``build_model`` does not pass it to the model (all in :mod:`benchmark.core.config`). The report finds
a run's entry by the run's model name, so a report of old runs shows today's names. Every key is
optional::

    meta:
      display_name: DMTL          # the name in tables (default: the model's name)
      focus: true                 # the model a report centres on (at most one model): first in the
                                  # tables; its best configuration (by validation) is tested against
                                  # every baseline; its swept parameters get a curve and an ablation
      swept:                      # parameters sweeps vary: report columns and label parts, in order
        lambda_profile: {short: λ, kind: number, file: lambda}
        attention:
          kind: category          # number: the x axis of "<short> sweep"; category: its variants
          default: softmax        # the value of runs that did not log it
          levels: {softmax: "the paper's attention", none: "α = 1 (no attention)"}   # order + notes
      reported:                   # published numbers: one row marked †, never bold, never tested
        label: DMTL (paper, reported)
        source: arXiv 2504.06274
        protocol: an unpublished protocol
        detail: the authors' split, relevance threshold and candidate set are unknown
        k: 10                     # the cut-off the numbers are at: shown only for runs at that k
        metrics: {ml100k: {precision_at_10: 0.6867}}
      reference: {label: Oracle (true rating), order: 0, trivial: false}   # a reference predictor
      control: true               # the focus model's declared control (the report's findings test it)
      reads_groups: true          # its fit reads the groups (FitContext.groups): its user-level metrics
                                  # depend on the grouping, so configurations differing in grouping.*
                                  # are never merged in the report (benchmark/report/merge.py)
      group_item_only: true       # it needs a group split of a group-item dataset (camra2011, mafengwo):
                                  # the user-level sweeps (+sweep=paper, tuned) and tables leave it out
      packages: [scikit-surprise] # distributions whose version can change the model's results
      feedback: explicit          # what it learns from: explicit (rating values: an MSE on ratings, a rating
                                  # mean; refused on implicit data, skipped by sweeps with a note), implicit
                                  # (which pairs exist: made for implicit feedback, runs on rated data too,
                                  # reading every rated pair as a positive), any (default: both are meaningful)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchmark.core.config import CONF, MODEL_META
from benchmark.core.errors import ConfigError

KINDS = ("number", "category")
FEEDBACK = ("explicit", "implicit", "any")


@dataclass(frozen=True)
class Swept:
    """One parameter sweeps vary (``model.<key>``): a report column and part of a configuration's label."""
    key: str
    short: str                       # ``λ``: run names, labels, table headers
    kind: str                        # number | category
    file: str                        # ``lambda``: lambda_sweep.csv, ``attention``: attention_ablation.csv
    default: str | None = None       # category: the value of runs that did not log the parameter
    levels: tuple[str, ...] = ()     # category: the display order of its values
    notes: tuple[tuple[str, str], ...] = ()   # category: (value, what it means)

    @property
    def param(self) -> str:
        return f"model.{self.key}"

    def rank(self, value: Any) -> int:
        """A category value's place in ``levels`` (values not listed come after them)."""
        return self.levels.index(value) if value in self.levels else len(self.levels)


@dataclass(frozen=True)
class Reported:
    """Numbers a paper printed for the model, obtained outside this harness."""
    label: str
    source: str
    protocol: str
    detail: str
    k: int
    metrics: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Reference:
    """A reference predictor (oracle, constants, ...): its own block in the report, never a baseline."""
    label: str
    order: int
    trivial: bool                    # learns nothing about users (the oracle is not trivial: it is the ceiling)


@dataclass(frozen=True)
class ModelMeta:
    name: str
    display_name: str
    focus: bool = False
    swept: tuple[Swept, ...] = ()
    reported: Reported | None = None
    reference: Reference | None = None
    packages: tuple[str, ...] = ()
    control: bool = False            # the focus model's control (DMTL's: neural MF)
    reads_groups: bool = False       # its fit reads FitContext.groups
    group_item_only: bool = False    # runs only on a group split of a group-item dataset
    feedback: str = "any"            # explicit: needs rating values (not run on implicit data); implicit | any
    source: str = ""                 # the conf file it came from

    @property
    def curve(self) -> Swept | None:
        """The first numeric swept parameter: the x axis of the model's sweep section."""
        return next((s for s in self.swept if s.kind == "number"), None)

    @property
    def variant(self) -> Swept | None:
        """The first categorical swept parameter: the series of the sweep section, and its ablation."""
        return next((s for s in self.swept if s.kind == "category"), None)


def _check_keys(where: str, node: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)} "
                          f"(benchmark/core/models_meta.py)")


def _swept(where: str, key: str, node: Any) -> Swept:
    node = node or {}
    _check_keys(f"{where}.swept.{key}", node, ("short", "kind", "file", "default", "levels"))
    kind = str(node.get("kind", "number"))
    if kind not in KINDS:
        raise ConfigError(f"{where}.swept.{key}.kind={kind!r} must be one of {list(KINDS)}")
    levels = node.get("levels") or {}
    if isinstance(levels, list):
        levels = {level: "" for level in levels}
    return Swept(key=key, short=str(node.get("short", key)), kind=kind, file=str(node.get("file", key)),
                 default=None if node.get("default") is None else str(node["default"]),
                 levels=tuple(str(level) for level in levels),
                 notes=tuple((str(level), str(note)) for level, note in levels.items() if note))


def _reported(where: str, node: dict) -> Reported:
    _check_keys(f"{where}.reported", node, ("label", "source", "protocol", "detail", "k", "metrics"))
    return Reported(label=str(node["label"]), source=str(node.get("source", "")),
                    protocol=str(node.get("protocol", "")), detail=str(node.get("detail", "")),
                    k=int(node.get("k", 10)),
                    metrics={str(d): {str(m): float(v) for m, v in values.items()}
                             for d, values in (node.get("metrics") or {}).items()})


def parse(name: str, node: dict | None, where: str = "") -> ModelMeta:
    """A model's ``meta`` block (a plain dict, or None) as a :class:`ModelMeta`."""
    node = node or {}
    where = where or f"conf/model/{name}.yaml: meta"
    _check_keys(where, node, ("display_name", "focus", "swept", "reported", "reference", "packages",
                              "control", "reads_groups", "group_item_only", "feedback"))
    ref = node.get("reference")
    feedback = str(node.get("feedback", "any"))
    if feedback not in FEEDBACK:
        raise ConfigError(f"{where}.feedback={feedback!r} must be one of {list(FEEDBACK)}")
    if ref is not None:
        _check_keys(f"{where}.reference", ref, ("label", "order", "trivial"))
    return ModelMeta(
        name=name, display_name=str(node.get("display_name", name)), focus=bool(node.get("focus", False)),
        swept=tuple(_swept(where, str(key), value) for key, value in (node.get("swept") or {}).items()),
        reported=_reported(where, node["reported"]) if node.get("reported") else None,
        reference=None if ref is None else Reference(label=str(ref.get("label", name)), order=int(ref.get("order", 0)),
                                                     trivial=bool(ref.get("trivial", True))),
        packages=tuple(str(p) for p in node.get("packages") or ()), control=bool(node.get("control", False)),
        reads_groups=bool(node.get("reads_groups", False)),
        group_item_only=bool(node.get("group_item_only", False)), feedback=feedback, source=where)


@lru_cache(maxsize=4)
def catalogue(folder: Path = CONF / "model") -> dict[str, ModelMeta]:
    """Every model's meta, by model name (a file's ``name:``, else its stem), in file-name order."""
    metas: dict[str, ModelMeta] = {}
    for path in sorted(folder.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        name = str(cfg.get("name", path.stem))
        raw = cfg.get(MODEL_META)
        node = OmegaConf.to_container(raw, resolve=False) if raw is not None else None
        metas[name] = parse(name, node, f"{path.relative_to(folder.parent.parent)}: {MODEL_META}")
    focus = [m.name for m in metas.values() if m.focus]
    if len(focus) > 1:
        raise ConfigError(f"meta.focus is set for {focus} in {folder}; a report centres on one model")
    return metas


def model_meta(name: str) -> ModelMeta:
    """``name``'s meta; a model without a conf file (an old run's) gets its name and nothing else."""
    return catalogue().get(name) or ModelMeta(name=name, display_name=name)


def display_name(name: str) -> str:
    return model_meta(name).display_name


def focus() -> ModelMeta | None:
    """The model a report centres on (``meta.focus``), if any."""
    return next((m for m in catalogue().values() if m.focus), None)


def controls() -> tuple[str, ...]:
    """The models declared as the focus model's control (``meta.control``)."""
    return tuple(m.name for m in catalogue().values() if m.control)


def swept_params() -> tuple[Swept, ...]:
    """Every model's swept parameters, the focus model's first, each key once: the report's columns."""
    ordered = sorted(catalogue().values(), key=lambda m: not m.focus)
    seen: dict[str, Swept] = {}
    for meta in ordered:
        for swept in meta.swept:
            seen.setdefault(swept.key, swept)
    return tuple(seen.values())


def short_names() -> dict[str, str]:
    """``{"model.lambda_profile": "λ"}``: short labels of swept keys, for run names and job lines."""
    return {swept.param: swept.short for swept in swept_params()}


def reference_predictors() -> tuple[str, ...]:
    """The reference predictors' model names, in their display order."""
    refs = [m for m in catalogue().values() if m.reference is not None]
    return tuple(m.name for m in sorted(refs, key=lambda m: (m.reference.order, m.name)))


def group_item_models() -> tuple[str, ...]:
    """The models that run only on a group split of a group-item dataset (``meta.group_item_only``)."""
    return tuple(m.name for m in catalogue().values() if m.group_item_only)


def implicit_models() -> tuple[str, ...]:
    """The models made for implicit feedback (``meta.feedback: implicit``), in file-name order."""
    return tuple(m.name for m in catalogue().values() if m.feedback == "implicit")


def feedback_error(model: str, dataset: str, implicit: bool) -> str | None:
    """None when ``model`` can run on ``dataset``; else the one-line refusal and its fix: a model that
    needs rating values (``meta.feedback: explicit``) on implicit-feedback data (every rating 1.0, so an
    MSE on ratings or a rating mean learns nothing). ``implicit``: the dataset's ``feedback: implicit``
    (conf/dataset/<name>.yaml) or its loaded ``group_item.implicit``."""
    if not implicit or model_meta(model).feedback != "explicit":
        return None
    fits = ", ".join(f"model={name}" for name in implicit_models()) or "a model with meta.feedback: implicit"
    return (f"model={model} learns from rating values and dataset={dataset} is implicit feedback (no ratings): "
            f"use an implicit-feedback model: {fits}")


def packages() -> tuple[str, ...]:
    """The distributions models name (``meta.packages``), each once, in file-name order."""
    found: list[str] = []
    for meta in catalogue().values():
        found += [p for p in meta.packages if p not in found]
    return tuple(found)
