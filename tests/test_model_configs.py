"""Models own their configuration: each declares a typed config (a ``Settings`` dataclass, or
LensKit's own pydantic config) and refuses a bad value on construction in one line that names
the key as the user writes it and says the fix. The harness's schema keeps only its own keys.
(The same refusals through ``python -m benchmark``: tests/test_reliability.py's bad-input table.)"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
from omegaconf import OmegaConf

from baselines.lenskit import LenskitRecommender, LenskitSettings
from baselines.surprise import SurpriseParams, SurpriseRecommender
from benchmark.core.config import CONF, build_model
from benchmark.core.errors import ConfigError
from benchmark.core.schema import INT_POS, RULES, UNSET, Settings, setting, validate_config
from models.dmtl import DMTL, DMTLConfig, DMTLSizes
from models.neural_mf import NeuralMF, NeuralMFConfig
from models.reference import Constant, ConstantConfig

SIZES = {"user_dim": 4, "item_dim": 4, "shared_dim": 8}
DMTL_OK = {"lambda_profile": 0.1, "attention": "softmax", "activation": "relu", "dropout": 0.1}

# (what is built, the start of its one-line error)
BAD_MODELS = {
    "svd n_factors=-5": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"n_factors": -5}),
                         "model.params.n_factors=-5 must be an integer >= 1"),
    "svd n_epochs=abc": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"n_epochs": "abc"}),
                         "model.params.n_epochs='abc' must be an integer"),
    "svd lr_all=-1": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"lr_all": -1}), "model.params.lr_all=-1"),
    "svd biased=null": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"biased": None}),
                        "model.params.biased=null must be true or false"),
    "svd init_mean=nan": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"init_mean": math.nan}),
                          "model.params.init_mean=nan"),
    "knn k=0": (lambda: SurpriseRecommender("knn_basic", "surprise.KNNBasic", {"k": 0}), "model.params.k=0"),
    "svd unknown key": (lambda: SurpriseRecommender("svd", "surprise.SVD", {"n_factor": 5}),
                        "model.params for surprise.SVD:"),
    "lenskit max_nbrs=0": (lambda: LenskitRecommender("lenskit_item_knn", "lenskit.knn.ItemKNNScorer",
                                                      {"max_nbrs": 0}), "model.config.max_nbrs=0: "),
    "lenskit unknown key": (lambda: LenskitRecommender("lenskit_item_knn", "lenskit.knn.ItemKNNScorer",
                                                       {"nbrs": 3}), "model.config.nbrs=3: "),
    "lenskit fallback=maybe": (lambda: LenskitRecommender("lenskit_bias", "lenskit.basic.BiasScorer", {},
                                                          fallback="maybe"), "model.fallback='maybe'"),
    "dmtl lambda=-1": (lambda: DMTL(lambda_profile=-1, sizes=SIZES), "model.lambda_profile=-1 must be"),
    "dmtl attention=bogus": (lambda: DMTL(attention="bogus", sizes=SIZES), "model.attention='bogus' must be one of"),
    "dmtl activation=swish": (lambda: DMTL(activation="swish", sizes=SIZES), "model.activation='swish'"),
    "dmtl dropout=1": (lambda: DMTL(dropout=1.0, sizes=SIZES), "model.dropout=1.0"),
    "dmtl item_dim=0": (lambda: DMTL(sizes={**SIZES, "item_dim": 0}), "model.sizes.item_dim=0"),
    "dmtl shared_dim missing": (lambda: DMTL(sizes={"user_dim": 4, "item_dim": 4}), "model.sizes.shared_dim missing"),
    "dmtl sizes unknown key": (lambda: DMTL(sizes={**SIZES, "depth": 2}), "model.sizes has unknown keys ['depth']"),
    "neural_mf factors=0": (lambda: NeuralMF(factors=0), "model.factors=0 must be an integer >= 1"),
    "neural_mf factors=true": (lambda: NeuralMF(factors=True), "model.factors=true"),
    "neural_mf reg=-1": (lambda: NeuralMF(reg=-1), "model.reg=-1"),
    "neural_mf init_std=0": (lambda: NeuralMF(init_std=0), "model.init_std=0 must be a finite number > 0"),
    "constant value=median": (lambda: Constant(value="median"), "model.value='median' must be one of ['top', 'mean']"),
}


@pytest.mark.parametrize("build, start", BAD_MODELS.values(), ids=BAD_MODELS)
def test_each_model_refuses_a_bad_value_in_one_line_naming_the_key(build, start):
    with pytest.raises(ConfigError) as refused:
        build()
    message = str(refused.value)
    assert message.startswith(start), message
    assert "\n" not in message and "; " in message, message  # one line: what is wrong; the fix


# (config type, keyword arguments with one bad value, the key it names)
BAD_CONFIGS = [
    (SurpriseParams, {"n_cltr_u": 0}, "model.params.n_cltr_u=0"),
    (SurpriseParams, {"reg_bi": -0.1}, "model.params.reg_bi=-0.1"),
    (SurpriseParams, {"verbose": "yes"}, "model.params.verbose='yes'"),
    (LenskitSettings, {"scorer": 3, "fallback": True}, "model.scorer=3"),
    (DMTLConfig, {**DMTL_OK, "dropout": -0.5}, "model.dropout=-0.5"),
    (DMTLSizes, {**SIZES, "user_dim": 2.5}, "model.sizes.user_dim=2.5"),
    (NeuralMFConfig, {"reg": math.inf}, "model.reg=inf"),
    (ConstantConfig, {"value": None}, "model.value=null"),
]


@pytest.mark.parametrize("config, values, key", BAD_CONFIGS, ids=[key for _, _, key in BAD_CONFIGS])
def test_each_config_type_refuses_a_bad_value_on_construction(config, values, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.").replace("[", r"\[")):
        config(**values)


def test_every_shipped_model_config_is_accepted_and_passed_on_unchanged():
    """Every conf/model/*.yaml builds; Surprise gets exactly the params its file sets (no result changes)."""
    for path in sorted((CONF / "model").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "trainer" in node:
            node.trainer = OmegaConf.load(CONF / "trainer" / "default.yaml")
        model = build_model(node, seed=0)
        assert model.name == path.stem
        if isinstance(model, SurpriseRecommender):
            params = OmegaConf.to_container(node.params)
            assert SurpriseParams.of(params).kwargs() == params
            for key, value in params.items():
                assert getattr(model.algorithm, key, value) == value or key.endswith("_options")


def test_surprise_params_leave_unset_keys_to_surprise():
    params = SurpriseParams.of({"n_factors": 7, "sim_options": {"name": "msd"}})
    assert params.n_epochs is UNSET and params.kwargs() == {"n_factors": 7, "sim_options": {"name": "msd"}}
    assert SurpriseRecommender("svd", "surprise.SVD", {"n_factors": 7}).algorithm.n_epochs == 20  # Surprise's default


def test_the_schema_keeps_only_harness_keys(make_cfg):
    """No ``model.*`` rule left in the schema: a bad model value passes it and is refused by the model."""
    assert not [key for key in RULES if key.startswith("model.")]
    cfg = make_cfg("model=svd", "dataset=synthetic", "model.params.n_factors=-5")
    validate_config(cfg)
    with pytest.raises(ConfigError, match=r"^model\.params\.n_factors=-5 must be an integer >= 1"):
        build_model(cfg.model, seed=cfg.seed)


def test_settings_checks_declared_fields_and_mappings():
    @dataclass(frozen=True)
    class Widths(Settings):
        PREFIX: ClassVar[str] = "model.widths"
        FIX: ClassVar[str] = "set it in conf/model/x.yaml"

        inner: int = setting(INT_POS)
        outer: int = setting(INT_POS, 8)
        note: str = "unchecked"

    assert Widths.from_mapping({"inner": 3}).given() == {"inner": 3, "outer": 8, "note": "unchecked"}
    with pytest.raises(ConfigError, match=r"^model\.widths\.inner=0 must be an integer >= 1; set it in conf/model/x"):
        Widths(inner=0)
    with pytest.raises(ConfigError, match=r"^model\.widths\.inner missing; set it"):
        Widths.from_mapping({"outer": 2})
    with pytest.raises(ConfigError, match=r"^model\.widths has unknown keys \['wide'\]"):
        Widths.from_mapping({"inner": 1, "wide": 2})
