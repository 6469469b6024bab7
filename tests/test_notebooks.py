"""Notebooks and the batch: every notebook runs through papermill with tiny parameters and leaves its
artifacts; committed notebooks carry no outputs; a batch validates first, skips what is done, keeps
going past a failure and names it; collect copies the compact record the book shows.

The world notebooks need a world-shaped model: ``data/world/model`` when it exists, else a tiny
randomly initialised one (same classes and tokenizer, a few channels), built once per session.
"""

import json
import random

import nbformat
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from invrev import batch, cli, evaluate, experiments, generate, layout, notebooks, ratings, record, runs
from invrev.config import VARIANTS, make_config
from invrev.models import REPO_ROOT, WORLD_MODEL

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def world_model(tmp_path_factory):
    real = REPO_ROOT / WORLD_MODEL
    if (real / "invrev.json").is_file():
        return str(real)
    from invrev.world_model import model, pretrain

    small = model.WorldModelConfig(text_width=32, text_layers=1, text_heads=2, unet_channels=(32, 32, 64), head_dim=8)
    folder = tmp_path_factory.mktemp("world")
    return str(pretrain.pretrain(folder, pretrain.PretrainConfig(steps=1, batch_size=2), world=small, progress=False))


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/markdown", "")))
    return "\n".join(parts)


def _read(path):
    return _text(nbformat.read(path, as_version=4))


def test_committed_notebooks_carry_no_outputs():
    assert len(NOTEBOOKS) >= 7
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before committing"
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    assert {p.name for p in NOTEBOOKS} == set(notebooks.TINY), "every notebook needs tiny parameters in invrev.notebooks.TINY"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, world_model):
    """Every notebook executed with its tiny parameters, as `invrev notebooks` (make notebooks) does."""
    out = tmp_path_factory.mktemp("notebooks")
    notebooks.run_notebooks(out, world_model)
    return out


def test_notebooks_run_on_a_local_kernel_without_tcp_warnings(tmp_path, capfd):
    """The batch's kernels talk over IPC sockets: no "TCP without encryption" line per run in the log."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                               nbformat.v4.new_code_cell("print(x + 1)")],
                                         metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nbformat.write(notebook, tmp_path / "in.ipynb")
    notebooks.execute(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {"x": 41})
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs[0]["text"] == "42\n"
    assert "without encryption" not in capfd.readouterr().err


def test_component_notebooks(executed):
    text = _read(executed / "01_high_frequency_suppressor.ipynb")
    assert "max |dense 2-D convolution - gaussian_lowpass|" in text and "of the texture band's power" in text
    text = _read(executed / "02_inverse_relation_text.ipynb")
    assert "first entity's share" in text and "<inv> <r>" in text
    assert "as the share of inverse captions grows (0: " in text  # the measured dose and response is read and shown
    assert "lambda_verb=1.0: after 2 steps" in _read(executed / "03_pos_weighted_control_loss.ipynb")
    assert "mean t: 600.9 exact" in _read(executed / "04_relation_focal_sampling.ipynb")


def test_the_pretraining_notebook_writes_under_the_smoke_runs_folder(executed):
    """Its ``out`` is a folder of the smoke run's own, not a fixed path in the repository."""
    pretrained = executed / "world_pretrain"
    assert (pretrained / "pretrain_log.csv").is_file() and (pretrained / "model" / "invrev.json").is_file()
    assert str(pretrained / "model") in _read(executed / "05_world_pretrain.ipynb")


def test_run_results_and_explorer_notebooks(executed):
    run = runs.run_dir(executed / "runs", "hanging_from", "inv_reversion", 0)
    for name in ("config.json", "manifest.json", "done.json", "log.csv", "learned/r.safetensors", "eval/grid.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["summary"]["n"] == 2 and len(metrics["images"]) == 2
    assert "relation accuracy" in _read(executed / "10_run.ipynb")
    assert "1 runs in" in _read(executed / "20_results.ipynb")
    assert "the relation in words" in _read(executed / "30_explorer.ipynb")


@pytest.fixture(scope="module")
def batch_runs(tmp_path_factory, world_model):
    """Two runs (sd and inv_reversion) through the run notebook, trained and evaluated jointly first."""
    root = tmp_path_factory.mktemp("runs")
    experiment = {"relations": ["hanging_from"], "variants": ["sd", "inv_reversion"], "seeds": [0],
                  "params": {**notebooks.TINY["10_run.ipynb"], "model": world_model}}
    result = batch.run_batch(experiment, root, joint=2)
    return experiment, root, result


def test_batch_runs_the_run_notebook_then_skips(batch_runs, capsys):
    experiment, root, result = batch_runs
    assert result.failed == {} and len(result.done) == 2
    for variant in ("sd", "inv_reversion"):
        folder = runs.run_dir(root, "hanging_from", variant, 0)
        for name in ("run.ipynb", "config.json", "manifest.json", "done.json", "batch.json", "eval/metrics.json", "eval/grid.png"):
            assert (folder / name).is_file(), f"{variant}: {name} missing"
    trained = runs.run_dir(root, "hanging_from", "inv_reversion", 0)
    assert "already trained with this config" in _read(trained / "run.ipynb")
    for variant in ("sd", "inv_reversion"):
        assert "already evaluated with these settings" in _read(runs.run_dir(root, "hanging_from", variant, 0) / "run.ipynb")
    assert "--relations hanging_from --variants inv_reversion --seeds 0" in json.loads((trained / "batch.json").read_text())["command"]
    (entry,) = batch.read_batch_log(root)  # one line per invocation that ran something
    assert entry["runs"] == {"done": 2, "skipped": 0, "failed": 0} and entry["joint"] == 2 and entry["cpus"] >= 1
    assert entry["matmul_gflops"] > 0  # the workers' speed, so timings from other machines can be compared
    assert 0 < entry["joint_seconds"] < entry["seconds"] and entry["device"] == "CPU" and entry["git"]["commit"]
    stamp = (trained / "run.ipynb").stat().st_mtime_ns
    again = batch.run_batch(experiment, root)
    assert again.done == [] and len(again.skipped) == 2 and (trained / "run.ipynb").stat().st_mtime_ns == stamp
    assert len(batch.read_batch_log(root)) == 1  # nothing ran: nothing logged
    assert "skipped (complete, same config)" in capsys.readouterr().out
    # a changed parameter is a different run: it is not skipped
    assert [j.name for j in experiments.plan(experiments.load_experiment(experiment), root, overrides={"steps": 3})
            if not experiments.already_run(j)] == ["hanging_from/sd/seed0", "hanging_from/inv_reversion/seed0"]
    # a notebook that failed after training and evaluation were done (its partial run.ipynb saved) is run again
    failed = runs.run_dir(root, "hanging_from", "sd", 0) / "failed.json"
    failed.write_text("{}")
    try:
        assert [j.name for j in experiments.plan(experiments.load_experiment(experiment), root)
                if not experiments.already_run(j)] == ["hanging_from/sd/seed0"]
    finally:
        failed.unlink()


def test_joint_evaluation_is_the_notebooks_own(batch_runs, tmp_path):
    """The batch's in-process evaluation, made with the model its joint training used, scores the same
    images as a fresh evaluation would; and retraining a run makes its evaluation stale."""
    experiment, root, _ = batch_runs
    job = next(j for j in experiments.plan(experiments.load_experiment(experiment), root) if j.variant == "inv_reversion")
    p = job.params
    fresh = evaluate.evaluate(p["model"], job.relation, job.variant, job.folder, seed=job.seed, prompts=p["eval_prompts"],
                              samples=p["eval_samples"], steps=p["eval_steps"], guidance=p["eval_guidance"], out=tmp_path)
    joint = json.loads((job.folder / "eval" / "metrics.json").read_text())
    assert fresh["images"] == joint["images"] and fresh["summary"]["trained"] == joint["summary"]["trained"]
    assert experiments.evaluated(job)
    manifest = json.loads((job.folder / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "finished": "later"}))
    assert evaluate.recorded(job.folder / "eval", tmp_path, model=p["model"], relation=job.relation, variant=job.variant,
                             seed=job.seed, prompts=p["eval_prompts"], samples=p["eval_samples"], steps=p["eval_steps"],
                             guidance=p["eval_guidance"]) is None


def test_batch_keeps_going_past_a_failure_and_exits_nonzero(tmp_path, world_model, capsys):
    """A stand-in for the run notebook (its parameters, then a failure or a metrics file) run by the
    batch's worker process: the failure is recorded and named, the other runs are done."""
    nb = nbformat.read(REPO_ROOT / notebooks.RUN_NOTEBOOK, as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    nb.cells = [parameters, nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "if variant == 'reversion':\n"
        "    raise RuntimeError('out of memory')\n"
        "out = pathlib.Path(runs_root, relation, variant, f'seed{seed}', 'eval')\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'summary': {'entity_accuracy': 1.0, 'relation_accuracy': 0.5}}))")]
    nbformat.write(nb, tmp_path / "stand_in.ipynb")
    (tmp_path / "exp.yaml").write_text("relations: [\"on\"]\nvariants: [sd, reversion, no_hf]\nseeds: [0]\n")
    args = cli._parser().parse_args(["batch", "--experiments", str(tmp_path / "exp.yaml"), "--runs", str(tmp_path / "runs"),
                                     "--notebook", str(tmp_path / "stand_in.ipynb"), "--set", f"model={world_model}"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "on/reversion/seed0: FAILED" in out and "on/no_hf/seed0: done" in out and "1 failed" in out
    folder = runs.run_dir(tmp_path / "runs", "on", "reversion", 0)
    assert "out of memory" in json.loads((folder / "failed.json").read_text())["error"]
    assert (folder / "run.ipynb").is_file() and not (folder / ".run.partial.ipynb").exists()  # kept for reading


def test_experiments_are_validated_before_anything_runs(tmp_path, world_model):
    with pytest.raises(experiments.BatchError, match="did you mean 'inside'"):
        experiments.load_experiment({"relations": ["insde"], "variants": ["sd"], "seeds": [0]})
    with pytest.raises(experiments.BatchError, match="unknown variant 'revers'"):
        experiments.load_experiment({"relations": ["on"], "variants": ["revers"], "seeds": [0]})
    with pytest.raises(experiments.BatchError, match="quote it"):
        experiments.load_experiment({"relations": [True], "variants": ["sd"], "seeds": [0]})  # YAML's bare on
    with pytest.raises(experiments.BatchError, match="seeds"):
        experiments.load_experiment({"relations": ["on"], "variants": ["sd"], "seeds": [None]})
    with pytest.raises(experiments.BatchError, match="unknown key 'seed'"):
        experiments.load_experiment({"relations": ["on"], "variants": ["sd"], "seed": [0]})
    ok = experiments.load_experiment({"relations": ["on"], "variants": ["sd"], "seeds": [0], "params": {"model": world_model}})
    with pytest.raises(experiments.BatchError, match="did you mean 'hf_sigma'"):
        experiments.plan(ok, tmp_path, overrides={"hf_sigm": 1.0})
    with pytest.raises(experiments.BatchError, match="must be int"):
        experiments.plan(ok, tmp_path, overrides={"steps": "many"})
    with pytest.raises(experiments.BatchError, match="lambda_verb"):
        experiments.plan(ok, tmp_path, overrides={"lambda_verb": 2.0})
    with pytest.raises(experiments.BatchError, match="model folder"):
        experiments.plan(ok, tmp_path, overrides={"model": "no/such/model/here"})
    full = experiments.load_experiment(REPO_ROOT / "experiments" / "full.yaml")
    assert len(experiments.plan(full, tmp_path, overrides={"model": world_model})) == 10 * 7 * 3
    smoke = experiments.load_experiment(REPO_ROOT / "experiments" / "smoke.yaml")
    jobs = experiments.plan(smoke, tmp_path, overrides={"model": world_model})
    assert len(jobs) == 7 and {j.variant for j in jobs} == set(VARIANTS)
    # runs trained on a model since replaced behind the same path: refused before anything runs, none lost
    stale = runs.run_dir(tmp_path, "on", "sd", 0)
    stale.mkdir(parents=True)
    (stale / "done.json").write_text(json.dumps({"steps": 0, "model_fingerprint": "sha256:an-older-model"}))
    with pytest.raises(experiments.BatchError, match="1 run folder.* another model.*new --runs"):
        experiments.plan(ok, tmp_path)
    assert (stale / "done.json").is_file()


def _run_notebook_config(params: dict):
    """Execute notebook 10's config cell (the one after its parameters) with ``params`` as its
    parameters, as papermill would; return the config it builds."""
    code = [c for c in nbformat.read(REPO_ROOT / notebooks.RUN_NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    cell = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])) + 1
    namespace = dict(params)
    exec(compile(code[cell].source, "10_run.ipynb config cell", "exec"), namespace)
    return namespace["config"]


def test_one_run_config_for_notebook_batch_and_cli(world_model, tmp_path, capsys):
    """Notebook 10's config cell, the batch's plan and `invrev train` build the same config, through
    experiments.run_config; lambda_verb None is the relation's own."""
    from invrev.world.scene import RELATIONS

    defaults = {**notebooks.notebook_parameters(), "model": world_model}
    assert defaults["lambda_verb"] is None
    for change in ({}, {"lambda_verb": 0.9}, {"relation": "on", "variant": "reversion", "seed": 3, "steps": 7},
                   {"variant": "sd", "hf_sigma": 1.5}):
        params = {**defaults, **change}
        config = _run_notebook_config(params)
        relation = RELATIONS[params["relation"]]
        assert config.lambda_verb == change.get("lambda_verb", relation.lambda_verb)
        assert config.relation_words == relation.words and config.steps == params["steps"]
        experiment = {"relations": [params["relation"]], "variants": [params["variant"]], "seeds": [params["seed"]],
                      "params": {k: v for k, v in change.items() if k not in experiments.PER_RUN} | {"model": world_model}}
        [job] = experiments.plan(experiments.load_experiment(experiment), tmp_path)
        assert job.config_json == config.to_json()
        sets = [f"--set={k}={json.dumps(params[k])}" for k in ("steps", "batch_size", "learning_rate", "hf_sigma")]
        sets += [f"--set=lambda_verb={params['lambda_verb']}"] if params["lambda_verb"] is not None else []
        args = cli._parser().parse_args(["train", "--relation", params["relation"], "--data", params["data_root"],
                                         "--variant", params["variant"], "--seed", str(params["seed"]),
                                         "--model", world_model, *sets])
        assert cli._run_config(args) == config


def _fake_runs(root, relations=("on", "inside"), seeds=(0, 1), prompts=4, samples=2):
    """Evaluated runs as a batch leaves them, with made-up scores (better variants pass more)."""
    rng = np.random.default_rng(0)
    for relation in relations:
        for strength, variant in enumerate(VARIANTS):
            for seed in seeds:
                folder = runs.run_dir(root, relation, variant, seed)
                config = make_config(f"data/world/benchmark/{relation}", variant, recipe="world", seed=seed)
                runs.atomic_write_text(folder / "config.json", config.to_json())
                runs.atomic_write_json(folder / "manifest.json", {"train_seconds": 1.5, "device": "cpu"})
                runs.atomic_write_json(folder / "done.json", {"steps": config.steps})
                (folder / "log.csv").write_text("step,loss,denoise,control,lr,seconds\n1,0.5,0.5,0.0,0.02,0.1\n")
                images = [{"prompt": f"a red circle <r> a blue square {i}", "seed": layout.image_seed(seed, i, k),
                           "entity": bool(rng.random() < 0.5), "relation": bool(rng.random() < strength / 8), "fusion": False}
                          for i in range(prompts) for k in range(samples)]
                summary = {"n": len(images), "steps": 25, "guidance": 4.0, "seed": seed, "model": WORLD_MODEL,
                           "entity_accuracy": 0.5, "relation_accuracy": 0.5}
                runs.atomic_write_json(folder / "eval" / "metrics.json", {"summary": summary, "images": images})
                if config.train:
                    (folder / "learned").mkdir()
                    save_file({"<r>": torch.zeros(8)}, str(folder / "learned" / "r.safetensors"))
                tiles = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in images]
                generate.grid(tiles, 2 * samples, scale=2).save(folder / "eval" / "grid.png")
    rating_set = ratings.sample_rating_set(relations[0], random.Random(0), ("sd", "textual_inversion", "reversion", "inv_reversion"))
    ranks = {v: i + 1 for i, v in enumerate(rating_set.variants)}
    ratings.append_ratings(root / "ratings.csv", ratings.rows_for("ada", rating_set, "relation", ranks))
    return root


def test_collect_and_the_results_notebook(tmp_path):
    source = _fake_runs(tmp_path / "runs")
    dest = record.collect(source, tmp_path / "latest")
    one = runs.run_dir(dest, "on", "inv_reversion", 1)
    assert {p.name for p in one.rglob("*") if p.is_file()} == {"config.json", "manifest.json", "done.json", "log.csv",
                                                                  "metrics.json", "grid.png", "r.safetensors"}
    assert (dest / "ratings.csv").is_file() and json.loads((dest / "collected.json").read_text())["runs"]
    text = _text(nbformat.read(dest / "20_results.ipynb", as_version=4))
    assert "28 runs" in text and "| **all** |" in text and "user " in text
    assert "checked claims hold on the relation world" in text
    assert "holds 28 of the 210 runs of `experiments/full.yaml` (seeds 0, 1)" in text  # a partial record says so
    # ratings a person saved into the record survive the next collect (kept in the source too)
    mine = dest / "study" / "ratings.csv"
    ratings.append_ratings(mine, ratings.rows_for("bo", ratings.sample_rating_set("on", random.Random(1)), "entity",
                                                  {v: i + 1 for i, v in enumerate(("sd", "textual_inversion", "reversion", "inv_reversion"))}))
    record.collect(source, dest, execute=False)
    assert (source / "study" / "ratings.csv").read_text() == mine.read_text() and mine.is_file()
    # a folder that collect did not write is never replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(record.CollectError, match="not written by collect"):
        record.collect(source, tmp_path / "mine", execute=False)


def test_the_example_run_notebook_names_no_folder_of_the_machine_it_ran_on(tmp_path):
    root = tmp_path / "somewhere" / "runs"
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(f'runs_root = "{root}"', outputs=[nbformat.v4.new_output(
            "stream", text=f"on / sd / seed 0 -> {root}/on/sd/seed0\n")])],
        metadata={"papermill": {"parameters": {"runs_root": str(root), "seed": 0},
                                "output_path": f"{root}/on/sd/seed0/run.ipynb"}})
    nbformat.write(notebook, tmp_path / "run.ipynb")
    record.without_machine_paths(tmp_path / "run.ipynb")
    text = (tmp_path / "run.ipynb").read_text()
    assert str(tmp_path) not in text and "-> runs/on/sd/seed0" in text and 'runs_root = \\"runs\\"' in text
    papermill_record = nbformat.read(tmp_path / "run.ipynb", as_version=4).metadata.papermill
    assert papermill_record.parameters.runs_root == "runs" and papermill_record.output_path == "runs/on/sd/seed0/run.ipynb"


def test_collect_merges_a_partial_batch_into_the_record(tmp_path, capsys):
    """A fresh clone has the record but no runs/: collecting one new seed must add to the record,
    not shrink it; runs on another model are refused, and --replace starts afresh."""
    old = _fake_runs(tmp_path / "old", seeds=(0, 1))
    batch.log_batch(old, {"seeds": [0, 1], "seconds": 60.0})
    (runs.run_dir(old, "on", "inv_reversion", 0) / "run.ipynb").write_text("the example the book shows")
    dest = record.collect(old, tmp_path / "latest", execute=False)
    (dest / "ratings.csv").write_text((dest / "ratings.csv").read_text() + "a row someone added in the record\n")
    (dest / "20_results.ipynb").write_text("results as executed earlier")
    new = _fake_runs(tmp_path / "new", seeds=(1, 2))  # seed 1 rerun, seed 2 new
    batch.log_batch(new, {"seeds": [1, 2], "seconds": 30.0})
    (runs.run_dir(new, "on", "no_hf", 2) / "run.ipynb").write_text("an ablation's notebook")
    for metrics in new.glob("*/*/seed1/eval/metrics.json"):
        data = json.loads(metrics.read_text())
        data["summary"]["entity_accuracy"] = 0.75
        metrics.write_text(json.dumps(data))
    record.collect(new, dest, execute=False)
    found = record.load_runs(dest)
    assert sorted({r["seed"] for r in found}) == [0, 1, 2] and len(found) == 2 * 7 * 3
    assert {r["summary"]["entity_accuracy"] for r in found if r["seed"] == 1} == {0.75}  # the source's rerun wins
    collected = json.loads((dest / "collected.json").read_text())
    assert [e["seconds"] for e in batch.read_batch_log(dest)] == [60.0, 30.0]  # both invocations that made the record
    assert collected["source"] == "new" and str(tmp_path) not in (dest / "collected.json").read_text()
    assert len(collected["kept_from_earlier"]) == 14 and all(name.endswith("seed0") for name in collected["kept_from_earlier"])
    assert "a row someone added in the record" in (new / "ratings.csv").read_text()  # carried into the source
    assert "a row someone added in the record" in (dest / "ratings.csv").read_text()
    assert "kept 14 runs of the earlier record" in capsys.readouterr().out
    # the book's example stays the earlier Inv-ReVersion run; the un-refreshed results notebook is kept, not lost
    assert (dest / "10_run.ipynb").read_text() == "the example the book shows" and collected["example_run"] == "on/inv_reversion/seed0"
    assert (dest / "20_results.ipynb").read_text() == "results as executed earlier"
    assert not list(tmp_path.glob(".latest.*"))  # built beside and swapped in
    # another model: nothing is written, and the error names a kept run and the fix
    other = _fake_runs(tmp_path / "other", relations=("on",), seeds=(5,))
    for metrics in other.glob("*/*/seed5/eval/metrics.json"):
        data = json.loads(metrics.read_text())
        data["summary"]["model_fingerprint"] = "sha256:another"
        metrics.write_text(json.dumps(data))
    for metrics in dest.glob("*/*/seed*/eval/metrics.json"):
        data = json.loads(metrics.read_text())
        data["summary"]["model_fingerprint"] = "sha256:first"
        metrics.write_text(json.dumps(data))
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(record.CollectError, match=r"evaluated on model sha256:first.*--replace"):
        record.collect(other, dest, execute=False)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    record.collect(other, dest, replace=True, execute=False)
    assert {(r["relation"], r["seed"]) for r in record.load_runs(dest)} == {("on", 5)}
    assert "a row someone added in the record" in (dest / "ratings.csv").read_text()  # ratings survive --replace


def test_an_interrupted_collect_leaves_the_earlier_record(tmp_path, monkeypatch):
    dest = record.collect(_fake_runs(tmp_path / "old", relations=("on",)), tmp_path / "latest", execute=False)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    copied = []

    def copy_then_stop(run, out):  # Ctrl-C in the middle of copying the new runs
        if len(copied) == 3:
            raise KeyboardInterrupt
        copied.append(out)
        real_copy(run, out)

    real_copy = record._copy_record
    monkeypatch.setattr(record, "_copy_record", copy_then_stop)
    with pytest.raises(KeyboardInterrupt):
        record.collect(_fake_runs(tmp_path / "new", relations=("on",), seeds=(0, 1, 2)), dest, execute=False)
    assert {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    record.collect(tmp_path / "new", dest, execute=False)  # the next collect cleans up and completes
    assert len(record.load_runs(dest)) == 21 and not list(tmp_path.glob(".latest.*"))


def test_the_record_keeps_the_grid_rows_the_book_shows(tmp_path):
    tiles = [np.full((32, 32, 3), 10 * i, dtype=np.uint8) for i in range(16)]  # 8 prompts x 2 samples
    generate.grid(tiles, 4).save(tmp_path / "grid.png")
    images = [{"prompt": f"prompt {i}", "seed": layout.image_seed(0, i, k)} for i in range(8) for k in range(2)]
    record._record_grid({"images": images, "grid": tmp_path / "grid.png"}, tmp_path / "kept.png")
    from PIL import Image

    full, kept = Image.open(tmp_path / "grid.png"), Image.open(tmp_path / "kept.png")
    assert kept.size == (full.width, 2 + 2 * 34) and full.height == 2 + 4 * 34  # prompts 0-3 of 8
    assert np.array_equal(np.asarray(kept), np.asarray(full)[: kept.height])


def test_kernels_do_not_share_sockets():
    """Two kernels (two batch workers) never bind the same IPC socket: jupyter_client's default names
    them kernel-ipc-<n> in the working folder, and a 2-worker batch lost 4 of 70 notebooks to it."""
    import os

    manager = notebooks._kernel_manager()
    a, b = manager(kernel_name=notebooks.KERNEL), manager(kernel_name=notebooks.KERNEL)
    if a.transport != "ipc":
        pytest.skip("TCP transport on this system: ports are chosen free by the OS")
    assert a.ip != b.ip and os.path.isabs(a.ip) and os.path.dirname(a.ip) == os.path.dirname(b.ip)
    assert len(f"{a.ip}-65535".encode()) < 107  # Unix socket paths stop at 107 bytes
