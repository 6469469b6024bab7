"""The training loop on the tiny SD-shaped pipeline: invariants, round trips, resume, multi-run."""

import csv
import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from invrev import embeddings, generate, trainer
from invrev.config import VARIANTS
from invrev.filters import gaussian_lowpass


def _learned(folder):
    return embeddings.load_learned(sorted((folder / "learned").glob("*.safetensors")))


def test_restore_invariant(tiny_config, components, tmp_path):
    before = components.text_encoder.get_input_embeddings().weight.detach().clone()
    trainer.train(tiny_config(steps=3), tmp_path / "run", components=components, progress=False)
    vectors = _learned(tmp_path / "run")
    ids = embeddings.use_learned(components.tokenizer, components.text_encoder, vectors)
    after = components.text_encoder.get_input_embeddings().weight.detach()
    others = [i for i in range(before.shape[0]) if i not in ids]
    assert torch.equal(after[others], before[others])  # bit-identical
    init = {"<r>": before[components.tokenizer.convert_tokens_to_ids("and")],
            "<inv>": before[components.tokenizer.convert_tokens_to_ids("reverse")]}
    for token, token_id in zip(vectors, ids):
        assert not torch.equal(after[token_id], init[token])
        assert torch.equal(after[token_id], vectors[token])


def test_run_folder_is_complete(tiny_config, components, tmp_path):
    folder = trainer.train(tiny_config(), tmp_path / "run", components=components, progress=False)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "manifest.json", "log.csv", "checkpoint.pt", "done.json", "learned"} <= names
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("git", "versions", "device", "seed", "model", "data", "started", "finished", "train_seconds"):
        assert key in manifest
    assert manifest["data"]["sha256"]["text.json"]
    rows = (folder / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,denoise,control,lr,seconds" and len(rows) == 5
    saved = load_file(str(folder / "learned" / "r.safetensors"))
    assert list(saved) == ["<r>"] and saved["<r>"].dtype == torch.float32 and saved["<r>"].ndim == 1


def test_save_load_textual_inversion_generate_round_trip(tiny_config, tiny_model, components, tmp_path):
    folder = trainer.train(tiny_config(), tmp_path / "run", components=components, progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None, requires_safety_checker=False)
    files = [str(folder / "learned" / "r.safetensors"), str(folder / "learned" / "inv.safetensors")]
    pipe.load_textual_inversion(files, token=["<r>", "<inv>"])
    ours = _learned(folder)
    for token in ("<r>", "<inv>"):
        row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(token)]
        assert torch.equal(row, ours[token])
    # Generation through the diffusers-loaded tokens equals generation through ours.
    generate.load_run_tokens(components, folder)
    prompts, seeds = ["a cat <r> a dog", "a dog <inv> <r> a cat"], [1, 2]
    mine = generate.generate(components, prompts, seeds, steps=3)
    components.tokenizer, components.text_encoder = pipe.tokenizer, pipe.text_encoder
    theirs = generate.generate(components, prompts, seeds, steps=3)
    assert all((a == b).all() for a, b in zip(mine, theirs))
    assert mine[0].shape == (16, 16, 3) and mine[0].dtype.name == "uint8"


def test_reversion_bin_loads_safely(tmp_path):
    path = tmp_path / "learned_embeds.bin"
    torch.save({"<R>": torch.arange(4.0)}, path)
    assert torch.equal(embeddings.load_learned([path])["<r>"], torch.arange(4.0))
    ran = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (ran.touch, ())

    torch.save({"<r>": Payload()}, tmp_path / "evil.bin")
    with pytest.raises(embeddings.TokenError, match="evil.bin: not a safe tensor file") as err:
        embeddings.load_learned([tmp_path / "evil.bin"])
    assert not ran.exists()  # the pickle's code never ran
    assert "weights_only=False" not in str(err.value)  # torch's own advice would run the payload


def test_resume_is_bit_identical(tiny_config, components, tmp_path):
    cfg = tiny_config(steps=4, checkpoint_every=2)
    straight = trainer.train(cfg, tmp_path / "straight", components=components, progress=False)
    # Interrupt after the step-2 checkpoint: run 2 steps of the same config, then resume to 4.
    partial = tmp_path / "partial"
    trainer.train(cfg.replace(steps=2), partial, components=components, progress=False)
    (partial / "config.json").write_text(cfg.to_json() + "\n")
    (partial / "done.json").unlink()
    trainer.train(cfg, partial, components=components, resume=True, progress=False)
    a, b = _learned(straight), _learned(partial)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "log.csv").read_text().splitlines()[1:][-1].split(",")[:5] == \
        (partial / "log.csv").read_text().splitlines()[1:][-1].split(",")[:5]


def test_existing_folder_is_never_overwritten(tiny_config, components, tmp_path):
    trainer.train(tiny_config(steps=1), tmp_path / "run", components=components, progress=False)
    with pytest.raises(trainer.TrainingError, match="already holds a finished run.*never overwritten"):
        trainer.train(tiny_config(steps=1), tmp_path / "run", components=components, progress=False)
    with pytest.raises(trainer.TrainingError, match="different config"):
        trainer.train(tiny_config(steps=2, seed=9), tmp_path / "run", components=components, resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_message(tiny_config, components, tmp_path):
    cfg = tiny_config(steps=3, learning_rate=1e30)  # finite, but the vectors overflow
    with pytest.raises(trainer.TrainingError, match="loss became nan at step 2.*lower learning_rate.*No checkpoint"):
        trainer.train(cfg, tmp_path / "run", components=components, progress=False)
    assert not (tmp_path / "run" / "done.json").exists()


def test_multi_run_equals_separate_runs(tiny_config, components, tmp_path):
    configs = [tiny_config(variant="inv_reversion", seed=1), tiny_config(variant="reversion", seed=2, steps=3),
               tiny_config(variant="textual_inversion", seed=3, batch_size=3)]
    joint = trainer.train_many(configs, [tmp_path / f"joint{i}" for i in range(3)], components=components, progress=False)
    for i, cfg in enumerate(configs):
        alone = trainer.train(cfg, tmp_path / f"alone{i}", components=components, progress=False)
        a, b = _learned(joint[i]), _learned(alone)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains(variant, tiny_config, components, tmp_path):
    """What each variant must differ in: the tokens it learns, whether the control loss acts, the
    logged total as Eq. 10 weighs it, and that no row of the table but its own tokens' moves."""
    tok, text_encoder = components.tokenizer, components.text_encoder
    before = text_encoder.get_input_embeddings().weight.detach().clone()
    config = tiny_config(variant=variant, steps=2)
    folder = trainer.train(config, tmp_path / variant, components=components, progress=False)
    assert (folder / "done.json").is_file()
    learned = _learned(folder) if (folder / "learned").exists() else {}
    assert set(learned) == (set() if not config.train else {"<r>", "<inv>"} if config.inverse else {"<r>"})
    with open(folder / "log.csv", newline="") as handle:
        log = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    assert len(log) == (2 if config.train else 0)
    for row in log:
        assert row["denoise"] > 0 and (row["control"] > 0) == (config.steer != "none")
        assert row["loss"] == pytest.approx(config.lambda_denoise * row["denoise"] + config.lambda_control * row["control"])
    ids = embeddings.use_learned(tok, text_encoder, learned) if learned else []
    after = text_encoder.get_input_embeddings().weight.detach()
    others = [i for i in range(before.shape[0]) if i not in ids]
    assert torch.equal(after[others], before[others])
    start = {"<r>": config.init_word, "<inv>": config.inverse_init_word}
    for token, vector in learned.items():
        assert not torch.equal(vector, before[tok.convert_tokens_to_ids(start[token])])


def test_the_suppressor_filters_where_its_placement_says(tiny_config, components, tmp_path):
    """Same seed, same draws: "latent" low-passes x_t on its way into the UNet (Eq. 8 as written),
    "image" filters the exemplars before they are encoded (Fig. 4), so x_t differs otherwise."""
    unet_input = {}
    for place, variant in (("off", "no_hf"), ("latent", "inv_reversion"), ("image", "inv_reversion")):
        hook = components.unet.register_forward_pre_hook(lambda module, args, place=place: unet_input.__setitem__(place, args[0].clone()))
        trainer.train(tiny_config(variant=variant, hf_suppress=place, steps=1), tmp_path / place, components=components, progress=False)
        hook.remove()
    sigma = tiny_config().hf_sigma_latent
    torch.testing.assert_close(unet_input["latent"], gaussian_lowpass(unet_input["off"], sigma))
    assert (unet_input["latent"] - unet_input["off"]).abs().max() > 1e-3
    assert (unet_input["image"] - unet_input["off"]).abs().max() > 1e-3
    assert (unet_input["image"] - unet_input["latent"]).abs().max() > 1e-3


def test_speed_options_change_speed_not_results(tiny_config, components, tmp_path):
    """Encoding the exemplars every micro-batch (as ReVersion) learns what the cached latents do."""
    config = tiny_config(steps=2)
    cached = trainer.train(config, tmp_path / "cached", components=components, progress=False)
    encoded = trainer.train(config, tmp_path / "encoded", components=components, progress=False,
                            speed=trainer.Speed(cache_latents=False, fused_adamw=False))
    a, b = _learned(cached), _learned(encoded)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_a_run_is_stale_once_its_model_changes(tiny_config, tmp_path):
    """`invrev world ship` replaces the model behind the same path: earlier runs must not count as done."""
    import shutil

    from invrev import runs
    from invrev.models import load_components

    model = shutil.copytree(tiny_config().model, tmp_path / "model")
    config = tiny_config(model=str(model), steps=2)
    folder = trainer.train(config, tmp_path / "run", components=load_components(str(model)), progress=False)
    assert runs.is_complete(folder, config.to_json())
    info = model / "scheduler" / "scheduler_config.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "steps_offset": 0, "_retrained": True}))
    assert not runs.is_complete(folder, config.to_json())
    with pytest.raises(trainer.TrainingError, match="another model"):
        trainer.train(config, folder, components=load_components(str(model)), resume=True, progress=False)
