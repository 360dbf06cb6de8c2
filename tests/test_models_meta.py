"""Model knowledge lives in conf/model/<name>.yaml (``meta:``), never in generic modules, and decides no result.

- ``meta`` is not part of the config hash, the logged params, or the model's constructor kwargs;
- the loader (benchmark/core/models_meta.py) reads every model's block and refuses unknown keys;
- no module under benchmark/report, tracking, run or evaluation names a model in its code
  (docstrings and comments may name one as an example).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from benchmark.core import models_meta
from benchmark.core.config import MODEL_META, RESULT_KEYS, build_model, config_hash
from benchmark.core.errors import ConfigError
from benchmark.tracking import provenance

REPO = Path(__file__).resolve().parent.parent
GENERIC = ("benchmark/report", "benchmark/tracking", "benchmark/run", "benchmark/evaluation")
MODEL_WORDS = re.compile(r"dmtl|lambda_profile|surprise", re.IGNORECASE)


def docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the module's, classes' and functions' docstrings."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def model_names_in_code(source: str) -> list[tuple[int, str]]:
    """(line, token) of every code token (names, strings, f-string parts) matching a model word;
    comments and docstrings are not code."""
    skip = docstring_lines(ast.parse(source))
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
            continue
        if token.type == tokenize.STRING and token.start[0] in skip:
            continue
        if MODEL_WORDS.search(token.string):
            found.append((token.start[0], token.string))
    return found


def test_the_scanner_sees_code_and_skips_docstrings_and_comments():
    source = ('"""A module about DMTL."""\n'
              'def f():\n    """Runs Surprise\'s SVD."""\n    return 1  # dmtl\n'
              'REFERENCE = "dmtl"\n'
              'def g(lambda_profile):\n    return f"{x} Surprise"\n')
    assert [line for line, _ in model_names_in_code(source)] == [5, 6, 7]


def test_no_generic_module_names_a_model():
    offenders = []
    for folder in GENERIC:
        for path in sorted((REPO / folder).rglob("*.py")):
            offenders += [f"{path.relative_to(REPO)}:{line}: {text}"
                          for line, text in model_names_in_code(path.read_text(encoding="utf-8"))]
    assert not offenders, ("model names in generic code (move them to conf/model/<name>.yaml meta, read through "
                           "benchmark/core/models_meta.py):\n" + "\n".join(offenders))


def test_every_model_has_its_meta_and_one_is_the_focus():
    catalogue = models_meta.catalogue()
    assert set(catalogue) == {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert all(meta.display_name for meta in catalogue.values())
    focus = models_meta.focus()
    assert focus is not None and [m.name for m in catalogue.values() if m.focus] == [focus.name]
    assert focus.curve is not None and focus.reported is not None
    refs = models_meta.reference_predictors()
    assert refs and [catalogue[m].reference.order for m in refs] == sorted(catalogue[m].reference.order for m in refs)
    # a model without a conf file (an old run's) still has a name
    assert models_meta.display_name("no_such_model") == "no_such_model"


def test_meta_keys_are_checked():
    with pytest.raises(ConfigError, match="unknown key"):
        models_meta.parse("x", {"display_nam": "X"})
    with pytest.raises(ConfigError, match="kind"):
        models_meta.parse("x", {"swept": {"a": {"kind": "curve"}}})
    meta = models_meta.parse("x", {"swept": {"a": {"kind": "category", "levels": {"p": "first", "q": ""}}}})
    assert meta.variant.levels == ("p", "q") and meta.variant.notes == (("p", "first"),) and meta.variant.rank("z") == 2


@pytest.mark.slow
def test_meta_decides_no_result(make_cfg):
    for model in sorted(models_meta.catalogue()):
        cfg = make_cfg(f"model={model}")
        assert MODEL_META in cfg.model, model
        renamed = make_cfg(f"model={model}", f"model.{MODEL_META}.display_name=Renamed")
        assert config_hash(renamed) == config_hash(cfg), model
        params = provenance.configured_params(cfg, RESULT_KEYS)
        assert not [key for key in params if key.startswith(f"model.{MODEL_META}")], model
    # the model is built without it (DMTL's constructor takes no ``meta``), and the config keeps it
    cfg = make_cfg("model=dmtl")
    assert type(build_model(cfg.model, seed=0)).__name__ == "DMTL"
    assert MODEL_META in cfg.model


def test_run_names_and_descriptions_read_the_meta(make_cfg):
    assert provenance.short_name("model.lambda_profile") == "λ"
    assert provenance.short_name("trainer.max_epochs") == "epochs"
    text = provenance.describe_run(make_cfg("model=dmtl", "model.lambda_profile=0.5"))
    assert "(λ = 0.5, attention softmax)" in text
    assert "(" not in provenance.describe_run(make_cfg("model=svd")).split(" on ")[0]
    assert "version.scikit-surprise" in provenance.package_versions()
