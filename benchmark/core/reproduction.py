"""A reproduction configuration: a published model's figures re-run under its authors' (reference) protocol.

``conf/reproduction/<name>.yaml`` (``python -m benchmark +reproduction=<name>``; absent by default) sets the
reference protocol's overrides through its defaults list and keys, and a ``reproduction:`` node saying what it
reproduces::

    reproduction:
      name: consrec_camra2011      # the file's name: the run's tag ``reproduction``
      model: {predictor: dot}      # the reproduced model's own keys: merged into ``model`` by :func:`apply`
                                   # only when that model runs (not under a reference predictor)
      label: AGREE, reference protocol (shipped split, 11 epochs)
      reference: LianHaiMiao/Attentive-Group-Recommendation @ fed20414   # the authors' code
      overrides: [model=agree, dataset=camra2011, split=shipped, trainer.fixed_epochs=11]  # what the file sets
      metrics: [group_sampled_hr_at_5, group_sampled_ndcg_at_5]    # the columns, as the harness logs them
      tolerance: {value: 0.03, kind: absolute, note: "about two standard errors of HR@5"}
      reported:                    # the published figures; a metric given as null: not retrieved
        - {source: "README, epoch 10", checked: true, metrics: {group_sampled_hr_at_5: 0.5910}}
      harness: {overrides: [model=agree, dataset=camra2011], split: corrected}   # the same model, this
                                   # harness's protocol: its command line and its group split (the run tag)
      references: [popularity_group, members_items]   # reference predictors shown under both protocols

The run checks that its config is what ``overrides`` says (a command-line override that changes one is refused
in one line), except that a reference predictor (``meta.reference``) may replace the model: the reference
protocol's baseline rows (the model's own ``model.*`` and ``trainer.*`` overrides are then not its). The run is
tagged ``reproduction`` (and ``reproduction.label``, ``reproduction.role``: ``model`` or ``reference``) and logs
the node as ``reproduction.json``; the report reads them from the tracking store
(benchmark/report/sections/group_reproduction.py). Only the name joins the config hash (a reproduction run is
its own job), and only when the node is present: ordinary runs keep their hashes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.core.config import CONF
from benchmark.core.errors import ConfigError, require

NODE = "reproduction"
TAG, LABEL_TAG, ROLE_TAG = "reproduction", "reproduction.label", "reproduction.role"
ARTIFACT = "reproduction.json"
KINDS = ("absolute", "relative")
FIX = "fix it in conf/reproduction/<name>.yaml (docs/protocol.md, \"Group recommenders\")"


@dataclass(frozen=True)
class Reported:
    """Figures one source printed: metric -> value (None: the source was not read, 'not retrieved')."""
    source: str
    metrics: dict[str, float | None]
    checked: bool = True             # the reproduction is judged against it (False: shown as context)


@dataclass(frozen=True)
class Reproduction:
    name: str
    label: str
    reference: str
    overrides: tuple[str, ...]
    metrics: tuple[str, ...]
    tolerance: float | None
    tolerance_kind: str = "absolute"
    tolerance_note: str = ""
    reported: tuple[Reported, ...] = ()
    harness_overrides: tuple[str, ...] = ()
    harness_split: str = ""
    references: tuple[str, ...] = ()
    note: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def command(self) -> str:
        return f"python -m benchmark +reproduction={self.name}"

    @property
    def harness_command(self) -> str:
        return "python -m benchmark " + " ".join(self.harness_overrides)

    def choice(self, group: str) -> str | None:
        """The value a config-group override of ``overrides`` gives (``model`` -> ``agree``)."""
        for override in self.overrides:
            key, _, value = override.partition("=")
            if key == group:
                return value
        return None

    def within(self, difference: float, reported: float) -> bool:
        """Whether ``difference`` (reproduced - reported) lies inside the tolerance."""
        limit = self.tolerance * (abs(reported) if self.tolerance_kind == "relative" else 1.0)
        return abs(difference) <= limit + 1e-12

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "reference": self.reference,
                "overrides": list(self.overrides), "metrics": list(self.metrics),
                "tolerance": {"value": self.tolerance, "kind": self.tolerance_kind, "note": self.tolerance_note},
                "reported": [{"source": r.source, "checked": r.checked, "metrics": dict(r.metrics)}
                             for r in self.reported],
                "harness": {"overrides": list(self.harness_overrides), "split": self.harness_split},
                "references": list(self.references), "note": self.note}


def _number(where: str, value: Any) -> float | None:
    if value is None:
        return None
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            f"{where}={value!r} must be a number or null (not retrieved); {FIX}")
    return float(value)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    require(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
            f"{where} must be a list of strings; {FIX}")
    return tuple(value)


def parse(node: Mapping[str, Any] | None) -> Reproduction:
    """The node as a :class:`Reproduction`; a missing or malformed key is one line naming it."""
    node = dict(node or {})
    allowed = ("name", "label", "model", "reference", "overrides", "metrics", "tolerance", "reported", "harness", "references",
               "note")
    unknown = sorted(set(node) - set(allowed))
    require(not unknown, f"reproduction has unknown keys {unknown}; use {', '.join(allowed)}")
    for key in ("name", "label", "reference"):
        require(isinstance(node.get(key), str) and node[key], f"reproduction.{key} missing; {FIX}")
    metrics = _strings("reproduction.metrics", node.get("metrics"))
    require(metrics, f"reproduction.metrics is empty; list the metrics it compares; {FIX}")
    tolerance = dict(node.get("tolerance") or {})
    kind = tolerance.get("kind", "absolute")
    require(kind in KINDS, f"reproduction.tolerance.kind={kind!r} must be one of {list(KINDS)}; {FIX}")
    value = _number("reproduction.tolerance.value", tolerance.get("value"))
    require(value is None or value >= 0, f"reproduction.tolerance.value={value} must be >= 0; {FIX}")
    reported = []
    for n, entry in enumerate(node.get("reported") or []):
        where = f"reproduction.reported[{n}]"
        require(isinstance(entry, Mapping) and isinstance(entry.get("source"), str),
                f"{where} needs a source (where the figures were printed); {FIX}")
        figures = dict(entry.get("metrics") or {})
        stray = sorted(set(figures) - set(metrics))
        require(not stray, f"{where}.metrics has {stray}, not in reproduction.metrics; add them there; {FIX}")
        checked = entry.get("checked", True)
        require(isinstance(checked, bool), f"{where}.checked must be true or false; {FIX}")
        reported.append(Reported(entry["source"], {m: _number(f"{where}.metrics.{m}", v) for m, v in figures.items()},
                                 checked))
    harness = dict(node.get("harness") or {})
    return Reproduction(name=node["name"], label=node["label"], reference=node["reference"],
                        overrides=_strings("reproduction.overrides", node.get("overrides") or []),
                        metrics=metrics, tolerance=value, tolerance_kind=kind,
                        tolerance_note=str(tolerance.get("note") or ""), reported=tuple(reported),
                        harness_overrides=_strings("reproduction.harness.overrides", harness.get("overrides") or []),
                        harness_split=str(harness.get("split") or ""),
                        references=_strings("reproduction.references", node.get("references") or []),
                        note=str(node.get("note") or ""))


def of(cfg: DictConfig) -> Reproduction | None:
    """The run's reproduction (``+reproduction=<name>``), or None for an ordinary run."""
    node = OmegaConf.select(cfg, NODE, default=None)
    if node is None:
        return None
    return parse(OmegaConf.to_container(node, resolve=True))


def apply(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the reproduction's ``model`` keys merged into ``model`` when the run is the reproduced
    model (``role`` model); an ordinary run, or a reference predictor's, unchanged. Part of
    ``benchmark.run.job.dataset_defaults``: the merged config is the run's (hashed, logged, in config.yaml)."""
    node = OmegaConf.select(cfg, NODE, default=None)
    keys = OmegaConf.select(node, "model", default=None) if node is not None else None
    if not keys or tags(cfg).get(ROLE_TAG) != "model":
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(cfg.model, keys)
    return cfg


def role(cfg: DictConfig, spec: Reproduction) -> str:
    """``model`` (the reproduced model) or ``reference`` (a reference predictor under the same protocol)."""
    return "model" if spec.choice("model") in (None, str(cfg.model.name)) else "reference"


def tags(cfg: DictConfig) -> dict[str, str]:
    """The run tags of a reproduction run ({} for an ordinary run; the node is checked by :func:`check`)."""
    node = OmegaConf.select(cfg, NODE, default=None)
    if node is None:
        return {}
    name, label = OmegaConf.select(node, "name", default=""), OmegaConf.select(node, "label", default="")
    model = next((o.split("=", 1)[1] for o in OmegaConf.select(node, "overrides", default=None) or []
                  if o.startswith("model=")), None)
    return {TAG: str(name), LABEL_TAG: str(label),
            ROLE_TAG: "model" if model in (None, str(cfg.model.name)) else "reference"}


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, float) or isinstance(actual, float):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=1e-15)
        except (TypeError, ValueError):
            return False
    return actual == wanted


def _option_name(group: str, field_: str, value: Any) -> str:
    """The option of conf/<group>/ whose ``field_`` is ``value`` (``corrected``), else the value itself."""
    for path in sorted((CONF / group).glob("*.yaml")):
        if OmegaConf.select(OmegaConf.load(path), field_, default=None) == value:
            return path.stem
    return str(value)


def check(cfg: DictConfig, is_reference) -> Reproduction | None:
    """The run's reproduction, checked: its node parses and the config is what its ``overrides`` say.
    ``is_reference(model) -> bool``: a reference predictor may replace the model (its own ``model.*`` and
    ``trainer.*`` overrides then do not apply)."""
    spec = of(cfg)
    if spec is None:
        return None
    cfg = apply(cfg)  # idempotent: a config already through dataset_defaults is unchanged
    reference = role(cfg, spec) == "reference"
    require(not reference or is_reference(str(cfg.model.name)),
            f"+reproduction={spec.name} reproduces model={spec.choice('model')}; model={cfg.model.name} is not a "
            f"reference predictor: drop model= (a reproduction's configuration is its file)")
    for override in spec.overrides:
        key, _, value = override.partition("=")
        if reference and (key.split(".")[0] in ("model", "trainer")):
            continue
        if "." not in key and (CONF / key / f"{value}.yaml").is_file():  # a config-group choice
            option = OmegaConf.load(CONF / key / f"{value}.yaml")
            field_ = "name" if "name" in option else "_target_"
            actual = OmegaConf.select(cfg, f"{key}.{field_}", default=None)
            ok = actual == option[field_]
            shown = f"{key}={_option_name(key, field_, actual)}"
        else:
            actual = OmegaConf.select(cfg, key, default=None)
            ok = _same(actual, yaml.safe_load(value))
            shown = f"{key}={actual}"
        if not ok:
            raise ConfigError(f"+reproduction={spec.name} sets {override} but the run has {shown}: drop that "
                              f"override (a reproduction's configuration is its file, conf/reproduction/{spec.name}.yaml)")
    return spec
