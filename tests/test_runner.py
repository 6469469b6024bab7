"""The run notebook is a leaf: one package call trains and evaluates a run if needed, and the
notebook's parameter defaults are the world recipe's."""

import inspect
import json

import pytest

from invrev import evaluate, runner
from invrev.config import RECIPES
from invrev.notebooks import RUN_NOTEBOOK, notebook_parameters


def test_run_notebook_defaults_are_the_world_recipes():
    """The batch takes its defaults from the run notebook's parameters cell: they must be the
    recipe's, the evaluation's own defaults and the world's paths."""
    from invrev.paths import WORLD_BENCHMARK

    params = notebook_parameters(RUN_NOTEBOOK)
    world = RECIPES["world"]
    for key in ("model", "steps", "batch_size", "learning_rate", "hf_sigma"):
        assert params[key] == world[key], f"{RUN_NOTEBOOK}: {key} = {params[key]!r}, the world recipe says {world[key]!r}"
    defaults = inspect.signature(evaluate.evaluate).parameters
    assert params["eval_prompts"] == defaults["prompts"].default and params["eval_samples"] == defaults["samples"].default
    assert params["data_root"] == WORLD_BENCHMARK
    assert params["eval_steps"] is None and params["eval_guidance"] is None  # the model's own sampling


@pytest.fixture()
def world_run(tmp_path, tiny_model):
    """A run of a world relation on the tiny model: exemplars named like a benchmark relation."""
    from invrev.config import TrainConfig
    from invrev.testing import write_tiny_exemplars

    data = write_tiny_exemplars(tmp_path / "data" / "inside")
    config = TrainConfig.from_params(dict(exemplars=str(data), model=str(tiny_model), revision="local", resolution=16,
                                          steps=2, batch_size=2, grad_accum=1, checkpoint_every=2, hf_sigma=0.8))
    settings = dict(relation="inside", variant=config.variant, seed=config.seed, prompts=2, samples=1, steps=2,
                    guidance=1.5)
    return config, tmp_path / "run", settings


def test_prepare_trains_and_evaluates_once(world_run):
    config, folder, settings = world_run
    first = runner.prepare([config], [folder], [settings])
    assert first.trained == (True,) and first.evaluated == (True,)
    written = json.loads((folder / "eval" / "metrics.json").read_text())
    assert json.loads(json.dumps(first.metrics[0]["summary"])) == written["summary"] and written["summary"]["n"] == 2
    again = runner.prepare([config], [folder], [settings])
    assert again.trained == (False,) and again.evaluated == (False,)
    assert again.metrics[0]["images"] == first.metrics[0]["images"]
    changed = runner.prepare([config], [folder], [{**settings, "prompts": 3}])  # new settings: evaluate only
    assert changed.trained == (False,) and changed.evaluated == (True,) and changed.metrics[0]["summary"]["n"] == 3


def test_prepare_refuses_mismatched_lists(world_run):
    config, folder, settings = world_run
    with pytest.raises(ValueError, match="one of each per run"):
        runner.prepare([config], [folder, folder], [settings])
