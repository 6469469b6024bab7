"""The command line as a newcomer uses it: help, every variant trained, errors that say what to do."""

import argparse
import json
import subprocess
import sys

import pytest

from invrev import cli
from invrev.cli import main
from invrev.config import VARIANTS


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "generate", "evaluate", "demo", "world", "start here", "stable-diffusion-v1-5"):
        assert word in out


def test_help_and_argument_errors_do_not_load_torch():
    """Every typo would cost seconds if building the parser imported torch or diffusers."""
    code = ("import sys\nfrom invrev import cli\ncli._parser()\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _defaults(parser, dest: str, command: str = "invrev") -> dict[str, object]:
    """{command: default of its option stored in ``dest``} over every command and subcommand."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _defaults(sub, dest, f"{command} {name}")
        elif action.dest == dest and action.default is not None:
            found[command] = action.default
    return found


def test_the_command_line_defaults_name_what_the_repository_holds():
    """The defaults a newcomer gets without options: the embedded world model (a folder with its
    invrev.json), the run notebook the batch executes, the benchmark's relation folders."""
    from invrev import experiments, models, notebooks
    from invrev.world.scene import RELATIONS

    parser = cli._parser()
    models_ = _defaults(parser, "model")
    assert {"invrev train", "invrev evaluate", "invrev demo", "invrev world report", "invrev world sweep"} <= set(models_)
    assert set(models_.values()) == {models.WORLD_MODEL} and _defaults(parser, "dest")["invrev world ship"] == models.WORLD_MODEL
    assert (models.REPO_ROOT / models.WORLD_MODEL / "invrev.json").is_file()
    (notebook,) = _defaults(parser, "notebook").values()
    assert notebook == notebooks.RUN_NOTEBOOK and (models.REPO_ROOT / notebook).is_file()
    assert set(experiments.PER_RUN) <= set(notebooks.notebook_parameters(notebook))  # what the batch sets per run
    (data,) = set(_defaults(parser, "data").values())
    assert all((models.REPO_ROOT / data / relation / "text.json").is_file() for relation in RELATIONS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_train_every_variant_from_the_cli(variant, tiny_model, tiny_data, tmp_path):
    args = ["train", "--model", str(tiny_model), "--exemplars", str(tiny_data), "--variant", variant,
            "--seed", "3", "--out", str(tmp_path), "--set", "steps=2", "--set", "resolution=16",
            "--set", "batch_size=2", "--set", "grad_accum=1"]
    assert main(args) == 0
    folder = tmp_path / "inside" / variant / "seed3"
    for name in ("config.json", "manifest.json", "log.csv", "done.json"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert (config["variant"], config["seed"], config["steps"]) == (variant, 3, 2)
    assert (folder / "learned" / "r.safetensors").is_file() == (variant != "sd")


def test_generate_from_a_run(tiny_model, tiny_data, tmp_path):
    main(["train", "--model", str(tiny_model), "--exemplars", str(tiny_data), "--out", str(tmp_path / "runs"),
          "--set", "steps=1", "--set", "resolution=16", "--set", "batch_size=1", "--set", "grad_accum=1"])
    run = tmp_path / "runs" / "inside" / "inv_reversion" / "seed0"
    assert main(["generate", "--run", str(run), "--prompt", "a cat <r> a dog", "--seeds", "0", "1",
                 "--steps", "2", "--out", str(tmp_path / "gen")]) == 0
    names = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert names == ["000_a_cat_r_a_dog_seed0.png", "001_a_cat_r_a_dog_seed1.png", "grid.png"]


def test_errors_name_the_problem(tiny_model, tmp_path, capsys):
    assert main(["train", "--model", str(tiny_model), "--exemplars", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "no_model"), "--relation", "inside"]) == 1
    assert "model folder" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny_model), "--exemplars", str(tmp_path), "--set", "stepz=3"]) == 1
    assert "did you mean 'steps'" in capsys.readouterr().err
