"""Sampling settings belong to the model: invrev.json's "sampling", the sweep that chooses them on
validation pairs, and the rule that a cheaper sampler is taken only at equal quality."""

import json
import shutil

import numpy as np
import pytest

from invrev import generate, models
from invrev.world_model import release


def test_a_model_without_settings_is_sampled_as_reversion(tiny_model, components):
    assert models.sampling_settings(str(tiny_model)) == models.SD15_SAMPLING
    assert components.sampling == {"guidance": 7.5, "steps": 50, "scheduler": None, "guidance_rescale": 0.0}
    assert models.recipe_of(str(tiny_model)) == "sd15"


def test_settings_and_recipe_come_from_invrev_json(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    (folder / "invrev.json").write_text(json.dumps({"sampling": {"guidance": 1.5, "steps": 3}, "recipe": "world"}))
    assert models.sampling_settings(str(folder)) == {**models.SD15_SAMPLING, "guidance": 1.5, "steps": 3}
    assert models.recipe_of(str(folder)) == "world"
    (folder / "invrev.json").write_text(json.dumps({"sampling": {"guidence": 1.5}}))
    with pytest.raises(models.ModelError, match=r"invrev.json: unknown sampling setting\(s\) \['guidence'\]"):
        models.sampling_settings(str(folder))


def test_the_shipped_world_model_recommends_its_own_settings():
    info = json.loads((models.REPO_ROOT / models.WORLD_MODEL / "invrev.json").read_text())
    assert models.recipe_of(models.WORLD_MODEL) == "world"
    own = models.sampling_settings(models.WORLD_MODEL)
    assert own["guidance"] == info["sampling"]["guidance"] < 4.0  # chosen by the sweep, not the old 4.0
    assert info["sampling_sweep"]["rows"] and "validation" in info["sampling_sweep"]["pairs"]


def test_generate_uses_the_models_settings_unless_told(components):
    components.sampling = {**models.SD15_SAMPLING, "guidance": 1.0, "steps": 2}
    prompts, seeds = ["a red circle inside a blue square"] * 2, [0, 1]
    own = generate.generate(components, prompts, seeds)
    assert all(np.array_equal(a, b) for a, b in zip(own, generate.generate(components, prompts, seeds, 2, 1.0)))
    other = generate.generate(components, prompts, seeds, 2, 3.0)
    assert not all(np.array_equal(a, b) for a, b in zip(own, other))
    assert generate.resolve_sampling(components, None, 2.5, "DDIMScheduler") == (2, 2.5, "DDIMScheduler")


def test_guidance_rescale_zero_is_off(components):
    prompts, seeds = ["a red circle inside a blue square"], [3]
    plain = generate.generate(components, prompts, seeds, 2, 4.0)[0]
    assert np.array_equal(plain, generate.generate(components, prompts, seeds, 2, 4.0, guidance_rescale=0.0)[0])
    assert not np.array_equal(plain, generate.generate(components, prompts, seeds, 2, 4.0, guidance_rescale=0.7)[0])


def test_solvers_keep_a_clipped_models_clip_as_thresholding(components):
    components.scheduler_config = {**components.scheduler_config, "_class_name": "DDIMScheduler",
                                   "clip_sample": True, "clip_sample_range": 1.0}
    dpm = components.inference_scheduler("DPMSolverMultistepScheduler")
    assert dpm.config.thresholding and dpm.config.sample_max_value == 1.0
    assert not components.inference_scheduler("DDIMScheduler").config.get("thresholding", False)


def _rows(setting, named_hits, unnamed_hits=0, n=80):
    """Sweep rows for one setting: five named relations (n/5 images each) and one unnamed."""
    scheduler, steps, guidance = setting
    base = {"scheduler": scheduler, "steps": steps, "guidance": guidance, "guidance_rescale": 0.0}
    rows = [{**base, "relation": f"r{i}", "named": True, "n": n // 5, "entity": named_hits // 5,
             "relation_hits": named_hits // 5, "fusion": 0} for i in range(5)]
    return rows + [{**base, "relation": "u", "named": False, "n": n // 5, "entity": 0, "relation_hits": unnamed_hits, "fusion": 0}]


def test_choose_takes_a_cheaper_sampler_only_at_equal_quality():
    rows = _rows(("DDIM", 25, 1.5), 70) + _rows(("DDIM", 25, 4.0), 5) + _rows(("DPM", 10, 1.5), 65)
    chosen = release.choose(rows)
    assert (chosen["scheduler"], chosen["steps"], chosen["guidance"]) == ("DPM", 10, 1.5)
    assert chosen["best_on_validation"]["steps"] == 25
    rows = _rows(("DDIM", 25, 1.5), 75) + _rows(("DPM", 10, 1.5), 40)  # far outside the best's interval
    assert release.choose(rows)["steps"] == 25


def test_format_sweep_pools_named_relations_with_intervals():
    table = release.format_sweep(_rows(("DDIMScheduler", 25, 1.5), 70, unnamed_hits=2))
    header, rule, line = table.splitlines()
    assert "unnamed in words" in header
    assert line.startswith("| DDIM | 25 | 1.5 | 0 | 0.88 [") and "| 80 | 0.12 [" in line and line.endswith("| 16 |")


def test_report_table_shows_both_views_and_the_handle():
    row = {"relation": "hug", "named": False, "words": "hugging", "n": 80, "entity_accuracy": 0.5,
           "relation_accuracy": 0.1, "fusion_rate": 0.2, "reversed_rate": 0.0125,
           "seen": {"n": 80, "entity_accuracy": 0.6, "relation_accuracy": 0.05, "fusion_rate": 0.1},
           "handle": {"word": "cuddling", "n": 80, "entity_accuracy": 0.7, "relation_accuracy": 0.9, "fusion_rate": 0.0}}
    line = release.format_report([row]).splitlines()[-1]
    assert line == '| hug | no | hugging | 0.50 | 0.10 | 0.20 | 0.01 | 0.60 | 0.05 | 0.10 | 80 | "cuddling": 0.90 (0.70) |'


def test_guidance_one_skips_the_unconditional_pass_and_draws_the_same(components, monkeypatch):
    """At guidance 1 the guided prediction equals the conditional one: the shortcut must not change
    an image (beyond float rounding of batch 2 vs batch 1 in the UNet), and must halve the UNet batch."""
    from invrev import generate as gen

    prompts, seeds = ["a red circle inside a blue square", "a blue square on a red circle"], [5, 6]
    fast = gen.generate(components, prompts, seeds, 3, 1.0, "DDIMScheduler")
    sizes = []
    real = components.unet.forward
    monkeypatch.setattr(components.unet, "forward", lambda x, *a, **k: sizes.append(len(x)) or real(x, *a, **k))
    gen.generate(components, prompts, seeds, 3, 1.0, "DDIMScheduler")
    assert sizes == [2, 2, 2]
    monkeypatch.undo()
    slow = gen.generate(components, prompts, seeds, 3, 1.0 + 1e-9, "DDIMScheduler")  # the two-pass path
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(fast, slow))


def test_the_records_status_names_an_old_model_and_a_wrong_guidance():
    from invrev import record, runs

    model = models.WORLD_MODEL
    own = models.sampling_settings(model)["guidance"]
    now = runs.model_fingerprint(model)
    row = lambda g, fp: {"summary": {"guidance": g, "model": model, "model_fingerprint": fp}, "config": {}}
    old = record.sampling_status([row(4.0, "0" * 64)])
    assert old.stale and not old.current and old.sampled == (4.0,)
    off = record.sampling_status([row(4.0, now)])
    assert not off.stale and not off.current and off.recommended == (own,)
    assert record.sampling_status([row(own, now)]).current
