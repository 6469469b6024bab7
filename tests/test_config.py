"""The strict configuration: defaults from the published recipe, unknown keys and types refused."""

import dataclasses

import pytest

from invrev.config import RECIPES, VARIANTS, ConfigError, TrainConfig, load_config, make_config


def test_defaults_are_the_published_recipe():
    c = TrainConfig(exemplars="x/inside")
    assert (c.steps, c.batch_size, c.grad_accum, c.resolution, c.seed) == (3000, 2, 4, 512, 2023)
    assert c.effective_lr == pytest.approx(2e-3)
    assert (c.temperature, c.lambda_control, c.num_positives, c.importance_alpha) == (0.07, 0.01, 4, 0.5)
    assert c.init_word == "and" and c.samples == 24000
    assert c.relation == "inside" and c.words == "inside"


def test_variants_switch_the_components():
    get = lambda v: TrainConfig.from_params({"exemplars": "d/r", "variant": v})
    assert get("sd").train is False
    assert (get("textual_inversion").steer, get("textual_inversion").importance_sampling) == ("none", False)
    assert (get("reversion").steer, get("reversion").inverse, get("reversion").hf_suppress) == ("prepositions", False, "off")
    full = get("inv_reversion")
    assert (full.steer, full.inverse, full.hf_suppress, full.importance_sampling) == ("pos_weighted", True, "image", True)
    assert get("no_inverse").inverse is False and get("no_hf").hf_suppress == "off"
    assert get("no_pos_weight").steer == "prepositions"
    assert set(VARIANTS) == {"sd", "textual_inversion", "reversion", "inv_reversion", "no_inverse", "no_pos_weight", "no_hf"}


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat'.*'learning_rate'"):
        TrainConfig.from_params({"exemplars": "d/r", "learning_rat": 1e-3})


@pytest.mark.parametrize("key,value", [("steps", 1.5), ("steps", True), ("seed", None), ("learning_rate", "1e-3"), ("inverse", 1)])
def test_wrong_types_are_named(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        TrainConfig.from_params({"exemplars": "d/r", key: value})


def test_bad_values_and_capital_placeholders():
    with pytest.raises(ConfigError, match="variant='nope'"):
        TrainConfig.from_params({"exemplars": "d/r", "variant": "nope"})
    with pytest.raises(ConfigError, match="lower-cases"):
        TrainConfig(exemplars="d/r", placeholder="<R>")
    with pytest.raises(ConfigError, match="p_inverse"):
        TrainConfig(exemplars="d/r", p_inverse=1.5)
    with pytest.raises(ConfigError, match="exemplars is empty"):
        TrainConfig(exemplars="")


def test_frozen_and_round_trips_through_json(tmp_path):
    c = make_config("data/r", "no_hf", recipe="world", seed=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 1
    (tmp_path / "config.json").write_text(c.to_json())
    assert load_config(tmp_path / "config.json") == c
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(tmp_path / "bad.json")
    assert set(RECIPES["world"]) <= {f.name for f in dataclasses.fields(TrainConfig)}
