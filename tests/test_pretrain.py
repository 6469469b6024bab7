"""World pretraining: a fresh start, a resume, the loss log and the exported model."""

from pathlib import Path

import pytest
import torch

from invrev.models import load_components
from invrev.world_model import model as world_model
from invrev.world_model import pretrain

TINY = world_model.WorldModelConfig(text_width=32, text_layers=1, text_heads=2, unet_channels=(32, 32), head_dim=8)


def test_fresh_start_and_resume_keep_one_clean_log(tmp_path):
    config = pretrain.PretrainConfig(steps=3, batch_size=2, checkpoint_every=2)
    for resume in (False, False, True):  # a fresh start over an old log, then a resume from step 2
        out = pretrain.pretrain(tmp_path, config, TINY, resume=resume, progress=False)
    lines = (tmp_path / "pretrain_log.csv").read_text().splitlines()
    assert lines[0] == "step,loss,seconds" and [l.split(",")[0] for l in lines[1:]] == ["1", "2", "3"]
    components = load_components(str(out))
    assert components.codec.factor == 2 and components.unet.config.in_channels == 12


def test_batches_are_the_same_whatever_renders_them(tmp_path):
    """Batch k comes from its own seed: worker processes and a resume at k draw exactly what one process does."""
    import torch

    torch.set_num_threads(1)
    tokenizer = world_model.build(tmp_path, TINY)[0]
    config = pretrain.PretrainConfig(steps=4, batch_size=3, seed=7)
    batches = pretrain.Batches(config, TINY, tokenizer)
    alone = [batches[k] for k in range(4)]
    for workers, start in ((2, 0), (0, 2)):
        loader = pretrain._loader(pretrain.Batches(pretrain.PretrainConfig(steps=4, batch_size=3, seed=7, workers=workers),
                                                   TINY, tokenizer), start, torch.device("cpu"))
        for (x, ids), (x0, ids0) in zip(loader, alone[start:], strict=True):
            assert torch.equal(x, x0) and torch.equal(ids, ids0)
    other = pretrain.Batches(pretrain.PretrainConfig(steps=4, batch_size=3, seed=8), TINY, tokenizer)[0]
    assert not torch.equal(other[0], alone[0][0])


def test_extending_a_tokenizer_keeps_every_id(tmp_path):
    from invrev.tokenizer import build_tokenizer, extend_tokenizer

    old = build_tokenizer(["a", "red", "circle", "and", "on", "square"], tmp_path / "old")
    new, added = extend_tokenizer(old, ["red", "daubed", "swaddled", "circles"], tmp_path / "new")
    assert added == ["circles", "daubed", "swaddled"]
    for text in ("a red circle on a square", "a square and a circle", "<r> red"):
        assert new(text).input_ids == old(text).input_ids
    assert old.get_vocab().items() <= new.get_vocab().items()
    for word in added:
        (token,) = new(word, add_special_tokens=False).input_ids
        assert token >= len(old)


def test_warm_start_adds_rows_from_and(tmp_path):
    """A model built before the handles existed, continued: old rows equal, new rows = "and"."""
    from unittest import mock

    from invrev.world_model import model

    words = [w for w in model.vocabulary() if w not in ("daubed", "swaddled")]
    with mock.patch.object(model, "vocabulary", lambda: words):
        tok, te, unet, sched = model.build(tmp_path / "m", TINY)
    model.save(tmp_path / "m", tok, te, unet, sched, TINY, {})
    tok2, te2, *_ , world = pretrain.warm_start(str(tmp_path / "m"), tmp_path / "out")
    old = te.get_input_embeddings().weight.float()
    table = te2.get_input_embeddings().weight
    assert world == TINY and len(tok2) > len(tok)
    assert torch.equal(table[: len(tok)], old.half().float())
    and_row = table[tok2.convert_tokens_to_ids("and</w>")]
    assert torch.equal(table[tok2("daubed", add_special_tokens=False).input_ids[0]], and_row)
    # a model saved after loading from a folder names no folder of the machine it was saved on
    _, _, unet2, *_ = pretrain.warm_start(str(tmp_path / "m"), tmp_path / "out2")
    model.save(tmp_path / "m2", tok2, te2, unet2, sched, TINY, {})
    for folder in (tmp_path / "m2", Path(model.__file__).parents[2] / "data" / "world" / "model"):
        for config in folder.rglob("*.json"):
            assert str(tmp_path) not in config.read_text() and '"_name_or_path": "/' not in config.read_text(), config


def test_validation_during_training_keeps_the_best_model(tmp_path):
    """eval_every samples the EMA model on validation pairs, logs it and exports best_model/ with its
    score; the checkpoint written at that step already knows the best score (a resume keeps it)."""
    import csv
    import json

    config = pretrain.PretrainConfig(steps=2, batch_size=2, checkpoint_every=2, eval_every=2)
    pretrain.pretrain(tmp_path, config, TINY, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "eval_log.csv")))
    assert {r["step"] for r in rows} == {"2"} and len(rows) == 25  # 10 relations in words + 5 handles + 10 swaps
    summary = json.loads((tmp_path / "best_model_summary.json").read_text())
    assert summary["steps"] == 2 and summary["validation_score"] == pytest.approx(pretrain.validation_score(summary["validation"]), abs=1e-4)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["best"] == pytest.approx(summary["validation_score"], abs=1e-4)
    assert (tmp_path / "best_model" / "unet").is_dir()
    # it recommends the settings it was validated at, not SD 1.5's guidance 7.5
    from invrev import models

    own = models.sampling_settings(str(tmp_path / "best_model"))
    assert (own["guidance"], own["steps"], own["scheduler"]) == (config.eval_guidance, pretrain.VALIDATION_STEPS, "DDIMScheduler")


def test_a_warm_started_model_inherits_its_sources_sampling_settings(tmp_path):
    import json

    from invrev import models
    from invrev.world_model import model

    tok, te, unet, sched = model.build(tmp_path / "m", TINY)
    chosen = {"guidance": 1.25, "steps": 7, "scheduler": "DPMSolverMultistepScheduler", "guidance_rescale": 0.0}
    model.save(tmp_path / "m", tok, te, unet, sched, TINY, {"sampling": chosen})
    out = pretrain.pretrain(tmp_path / "ft", pretrain.PretrainConfig(steps=1, batch_size=2, init_from=str(tmp_path / "m")),
                            TINY, progress=False)
    assert models.sampling_settings(str(out)) == chosen
    assert "invrev world sweep --write-model" in json.loads((out / "invrev.json").read_text())["sampling_source"]
    # a sweep of its own replaces the inherited settings and says so
    from invrev.world_model import release

    rows = [{"named": True, "scheduler": "DDIMScheduler", "steps": 5, "guidance": g, "guidance_rescale": 0.0, "n": 10,
             "entity": e, "relation_hits": e} for g, e in ((1.0, 9), (2.0, 3))]
    assert release.write_sampling(str(out), rows)["guidance"] == 1.0
    meta = json.loads((out / "invrev.json").read_text())
    assert meta["sampling"]["guidance"] == 1.0 and "own sweep" in meta["sampling_source"]
