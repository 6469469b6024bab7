"""The whole chain on the shipped world model: every variant trained, then evaluated by the scorer."""

import json

import pytest

from invrev import evaluate, trainer
from invrev.config import VARIANTS, make_config
from invrev.models import REPO_ROOT, WORLD_MODEL, load_components_cached
from invrev.world import scene

BENCHMARK = REPO_ROOT / "data" / "world" / "benchmark"


def _script(name: str):
    """A module of ``scripts/`` (not a package), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world():
    return load_components_cached(WORLD_MODEL, "local")


def test_shipped_model_and_manifest_agree():
    manifest = json.loads((REPO_ROOT / "data" / "world" / "manifest.json").read_text())
    from invrev.runs import sha256_file

    for name, digest in manifest["files"].items():
        assert sha256_file(REPO_ROOT / "data" / "world" / name) == digest, name
    assert manifest["model"]["latent"] == {"type": "pixel", "factor": 2}


def test_every_stage_of_the_shipped_model_is_recorded_with_its_log():
    """The manifest walks back from the model through each warm start to the from-scratch run, and
    each stage's training log lies beside the model under the name ``ship`` gives it."""
    from invrev.world_model import release

    manifest = json.loads((REPO_ROOT / "data" / "world" / "manifest.json").read_text())
    chain = release.stages(manifest["model"])
    assert len(chain) >= 2 and not chain[0]["pretrain"].get("init_from")
    assert all(stage["pretrain"]["init_from"] for stage in chain[1:])
    for k in range(1, len(chain) + 1):
        assert (REPO_ROOT / "data" / "world" / release.stage_log(k, "pretrain_log.csv")).is_file(), k
    assert [release.stage_log(k, "eval_log.csv") for k in (1, 2, 3)] == [
        "eval_log.csv", "finetune_eval_log.csv", "finetune2_eval_log.csv"]
    assert release.stage_log(3, "pretrain_log.csv") == "finetune2_log.csv"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_and_evaluates(variant, world, tmp_path):
    relation = "wrapped_in"
    info = scene.RELATIONS[relation]
    config = make_config(BENCHMARK / relation, variant, "world", steps=2, batch_size=2,
                         relation_words=info.words, lambda_verb=info.lambda_verb)
    folder = trainer.train(config, tmp_path / "run", components=world, progress=False)
    result = evaluate.evaluate(WORLD_MODEL, relation, variant, folder if variant != "sd" else None,
                               prompts=2, samples=1, steps=2, out=folder / "eval", components=world)
    summary = json.loads((folder / "eval" / "metrics.json").read_text())["summary"]
    assert summary == json.loads(json.dumps(result["summary"]))
    assert summary["n"] == 2 and 0.0 <= summary["relation_accuracy"] <= 1.0
    assert (folder / "eval" / "grid.png").is_file()
    prompts = [r["prompt"] for r in result["images"]]
    assert all(("<r>" in p) == (variant != "sd") for p in prompts)
    assert all(isinstance(r["reversed"], bool) for r in result["images"]) and 0.0 <= summary["reversed_rate"] <= 1.0


def test_demo_draws_words_and_the_learned_token_side_by_side(tmp_path, capsys):
    """The demo at toy size: one model load, a line per stage, both numbers, the labelled figure."""
    from invrev import demo

    result = demo.run("painted_on", tmp_path, BENCHMARK, WORLD_MODEL, steps=2, prompts=1, sampling_steps=2)
    out = capsys.readouterr().out
    assert out.count("loading the world model") == 1 and "learning <r>" in out and "] done" in out
    assert "in words" in out and "with the learned <r>" in out
    assert result["words"]["n"] == result["learned"]["n"] == demo.SAMPLES
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "runs" / "painted_on" / "inv_reversion" / "seed0" / "learned").is_dir()


def test_direction_check_adds_reversed_hits_only_where_the_images_are_the_recorded_ones(world, tmp_path, capsys):
    """scripts/direction_check.py on two runs recorded without the direction check: it adds it to the
    run whose images it regenerates exactly and leaves the one whose record it cannot reproduce."""
    from invrev.experiments import eval_settings

    direction_check = _script("direction_check")
    for relation in ("on", "hanging_from"):
        info = scene.RELATIONS[relation]
        config = make_config(BENCHMARK / relation, "textual_inversion", "world", steps=2, batch_size=2,
                             relation_words=info.words, lambda_verb=info.lambda_verb)
        folder = trainer.train(config, tmp_path / relation / "textual_inversion" / "seed0", components=world, progress=False)
        params = {"model": WORLD_MODEL, "relation": relation, "variant": "textual_inversion", "seed": 0,
                  "eval_prompts": 2, "eval_samples": 2, "eval_steps": 2, "eval_guidance": None}
        (folder / "batch.json").write_text(json.dumps({"parameters": params}))
        evaluate.evaluate(WORLD_MODEL, run_folder=folder, out=folder / "eval", components=world, **eval_settings(params))
        metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        for image in metrics["images"]:  # as recorded before the direction check
            del image["reversed"]
        del metrics["summary"]["reversed_rate"], metrics["summary"]["reversed_ci95"]
        if relation == "on":  # a record these images do not reproduce
            metrics["images"][0]["relation"] = not metrics["images"][0]["relation"]
        (folder / "eval" / "metrics.json").write_text(json.dumps(metrics))
    before = (tmp_path / "on" / "textual_inversion" / "seed0" / "eval" / "metrics.json").read_text()

    checked = direction_check.main(["--runs", str(tmp_path), "--variants", "textual_inversion", "--write"])

    assert [r["relation"] for r in checked] == ["hanging_from"]
    assert "1 of 4 images differ from the record: left alone" in capsys.readouterr().out
    assert (tmp_path / "on" / "textual_inversion" / "seed0" / "eval" / "metrics.json").read_text() == before
    written = json.loads((tmp_path / "hanging_from" / "textual_inversion" / "seed0" / "eval" / "metrics.json").read_text())
    assert [i["reversed"] for i in written["images"]] == [i["reversed"] for i in checked[0]["images"]]
    assert written["summary"]["reversed_rate"] == sum(i["reversed"] for i in written["images"]) / 4


def test_recipe_check_scores_the_inverse_form_only_where_there_is_an_inverse_token(tmp_path):
    """scripts/inversion_recipe.py --inverse-form at toy size: Inv-ReVersion's row gains the scores of
    "B <inv> <r> A" prompts; Textual Inversion, which learns no <inv>, gains nothing."""
    recipe = _script("inversion_recipe")
    rows = {}
    for variant in ("inv_reversion", "textual_inversion"):
        out = tmp_path / f"{variant}.json"
        [rows[variant]] = recipe.main(["--relation", "painted_on", "--variant", variant, "--pairs", "1", "--samples", "2",
                                       "--candidate", "steps=2 batch_size=2", "--inverse-form", "--out", str(out)])
        written = json.loads(out.read_text())
        assert written["rows"] == [rows[variant]] and written["model_fingerprint"].startswith("sha256:")
    assert 0.0 <= rows["inv_reversion"]["inverse_form_relation_accuracy"] <= 1.0
    assert "<inv> norm" in rows["inv_reversion"] and "inverse_form_relation_accuracy" not in rows["textual_inversion"]


def test_readme_figure_names_the_missing_run_and_refuses_a_named_relation(tmp_path):
    figure = _script("unnamed_figure")
    with pytest.raises(ValueError, match="'inside': choose an unnamed relation"):
        figure.main(["--runs", str(tmp_path), "--relation", "inside"])
    with pytest.raises(FileNotFoundError, match=r"painted_on/sd/seed2/eval/metrics.json: no finished run; run `invrev batch"):
        figure.main(["--runs", str(tmp_path), "--out", str(tmp_path / "f.png")])
    assert not (tmp_path / "f.png").exists()


def test_readme_figure_refuses_runs_made_on_another_model(tmp_path):
    figure = _script("unnamed_figure")
    metrics = tmp_path / "painted_on" / "sd" / "seed2" / "eval" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"summary": {"seed": 2, "model_fingerprint": "sha256:an-older-model",
                                               "relation_accuracy": 0.0, "n": 80}}))
    with pytest.raises(ValueError, match="evaluated on model sha256:an-older-model, not the shipped"):
        figure.main(["--runs", str(tmp_path), "--out", str(tmp_path / "f.png")])


def test_report_names_each_edit_made_after_training():
    from invrev.world_model import release
    info = {"edits": [{"what": "the row of 'painted' redrawn", "seed": 5, "chosen_on": "validation pairs"}]}
    text = release.report_markdown(info, [])
    assert "Edited after training: the row of 'painted' redrawn, seed 5, chosen on validation pairs" in text
    assert "Edited after training" not in release.report_markdown({}, [])
