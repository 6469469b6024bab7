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
