"""World pretraining: a fresh start, a resume, the loss log and the exported model."""

from invrev.models import load_components
from invrev.world import model as world_model
from invrev.world import pretrain

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
