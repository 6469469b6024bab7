"""Bad input, tried as a new user would: each case must end in a message that names the file, field
or token and the fix, with no traceback and nothing the user made lost.

Every case returns what it gave and what the project answered; each runs once per module, whichever
test asks first, so the last test, which compares every answer with the committed table
``docs/bad_input.md``, holds alone and in any order. After changing a message, regenerate the table
with ``INVREV_WRITE_BAD_INPUT=1 python -m pytest tests/test_bad_input.py``.
"""

import contextlib
import io
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from invrev import batch, embeddings, generate, run_state, runs, trainer
from invrev.cli import main
from invrev.config import ConfigError, TrainConfig
from invrev.data import DataError, load_exemplars

TABLE = Path(__file__).resolve().parent.parent / "docs" / "bad_input.md"
CASES: dict[str, tuple[str, object]] = {}  # name -> (area, case), in the table's order
TINY = ["--set", "resolution=16", "--set", "batch_size=2", "--set", "grad_accum=1", "--set", "hf_sigma=0.8"]


def case(area: str, name: str):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = (area, fn)
        return fn
    return register


def expect(message: str, *needles: str) -> str:
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "Traceback" not in message
    return message


def cli(ctx, *args: str) -> str:
    """Run the command line; it must fail with exit status 1 and one clear message."""
    code = main(list(args))
    err = ctx.read_stderr()
    assert code == 1, err
    assert "invrev: error: " in err and "Traceback" not in err, err
    message = err.split("invrev: error: ", 1)[1]
    return "\n".join(line for line in message.split("\n") if line and not line.startswith("\r"))


def train(ctx, *args: str, out=None) -> str:
    return cli(ctx, "train", "--model", ctx.model, "--exemplars", ctx.data, "--out", str(out or ctx.tmp / "runs"), *TINY, *args)


def no_model_load(ctx):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    ctx.monkeypatch.setattr(trainer, "load_components_cached", refuse)


# --- token identity -------------------------------------------------------------------------------

@case("token", "placeholder is an existing word")
def _(ctx):
    return "--set placeholder=inside", expect(train(ctx, "--set", "placeholder=inside"), "'inside'", "already a word", "'<inside>'")


@case("token", "placeholder is a special token")
def _(ctx):
    return "--set placeholder=<|endoftext|>", expect(train(ctx, "--set", "placeholder=<|endoftext|>"), "special token", "'<r>'")


@case("token", "placeholder is the other placeholder")
def _(ctx):
    return "--set placeholder=<inv>", expect(train(ctx, "--set", "placeholder=<inv>"), "inverse_placeholder='<inv>'", "different names")


def _load(ctx, name, state):
    path = ctx.tmp / name
    save_file(state, str(path))
    with pytest.raises(embeddings.TokenError) as err:
        embeddings.use_learned(ctx.components.tokenizer, ctx.components.text_encoder, embeddings.load_learned([path]))
    return str(err.value)


@case("embedding file", "vector holds NaN")
def _(ctx):
    message = _load(ctx, "nan.safetensors", {"<r>": torch.tensor([1.0, float("nan")] * 16)})
    return "nan.safetensors: {'<r>': [1, nan, ...]}", expect(message, "nan.safetensors", "NaN", "'<r>'")


@case("embedding file", "a [2, D] tensor for one token")
def _(ctx):
    message = _load(ctx, "two.safetensors", {"<r>": torch.zeros(2, 32)})
    return "two.safetensors: {'<r>': float32[2, 32]}", expect(message, "two.safetensors", "[2, 32]", "one file per token")


@case("embedding file", "key is <|endoftext|>")
def _(ctx):
    message = _load(ctx, "eot.safetensors", {"<|endoftext|>": torch.zeros(32)})
    return "eot.safetensors: {'<|endoftext|>': float32[32]}", expect(message, "eot.safetensors", "special token", "Rename the key")


@case("embedding file", "key is an ordinary word")
def _(ctx):
    message = _load(ctx, "word.safetensors", {"cat": torch.zeros(32)})
    return "word.safetensors: {'cat': float32[32]}", expect(message, "'cat'", "already a word", "'<cat>'")


@case("embedding file", "malicious pickle")
def _(ctx):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo payload ran",))
    torch.save({"<r>": Payload()}, ctx.tmp / "evil.bin")
    with pytest.raises(embeddings.TokenError) as err:
        embeddings.load_learned([ctx.tmp / "evil.bin"])
    message = expect(str(err.value), "evil.bin", "not a safe tensor file", "safetensors")
    assert "weights_only=False" not in message
    return "evil.bin (pickle that runs os.system)", message


@case("embedding file", "garbage file")
def _(ctx):
    (ctx.tmp / "garbage.safetensors").write_bytes(b"not a tensor file " * 8)
    with pytest.raises(embeddings.TokenError) as err:
        embeddings.load_learned([ctx.tmp / "garbage.safetensors"])
    return "garbage.safetensors (random bytes)", expect(str(err.value), "garbage.safetensors", "not a learned embedding file")


@case("embedding file", "AUTOMATIC1111 embedding")
def _(ctx):
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}, "name": "r", "step": 3}, ctx.tmp / "a1111.pt")
    with pytest.raises(embeddings.TokenError) as err:
        embeddings.load_learned([ctx.tmp / "a1111.pt"])
    return "a1111.pt ({'string_to_param': ...})", expect(str(err.value), "a1111.pt", "AUTOMATIC1111", "load_textual_inversion")


# --- config numbers -------------------------------------------------------------------------------

@case("config", "zero steps")
def _(ctx):
    return "--set steps=0", expect(train(ctx, "--set", "steps=0"), "steps=0", "at least 1")


@case("config", "learning rate NaN")
def _(ctx):
    return "--set learning_rate=NaN", expect(train(ctx, "--set", "learning_rate=NaN"), "learning_rate=nan", "as given")


@case("config", "negative learning rate")
def _(ctx):
    message = expect(train(ctx, "--set", "learning_rate=-1"), "learning_rate=-1", "(0, inf)")
    assert "-8" not in message  # the value typed, not the one scaled by batch x accumulation
    return "--set learning_rate=-1", message


@case("config", "infinite learning rate")
def _(ctx):
    message = expect(train(ctx, "--set", "learning_rate=Infinity"), "learning_rate=inf")
    assert "resume" not in message
    return "--set learning_rate=Infinity", message


@case("config", "zero temperature")
def _(ctx):
    message = expect(train(ctx, "--set", "temperature=0"), "temperature=0", "divides")
    assert "learning_rate" not in message and "resume" not in message
    return "--set temperature=0", message


@case("config", "importance_alpha = 1")
def _(ctx):
    return "--set importance_alpha=1.0", expect(train(ctx, "--set", "importance_alpha=1.0"), "importance_alpha=1.0", "[0, 1)")


@case("config", "ReVersion's key name")
def _(ctx):
    return "--set max_train_steps=3", expect(train(ctx, "--set", "max_train_steps=3"), "'max_train_steps'", "here it is 'steps'")


@case("config", "relation name with a typo")
def _(ctx):
    message = cli(ctx, "train", "--model", ctx.model, "--data", str(Path(ctx.data).parent), "--relation", "insde")
    return "--relation insde", expect(message, "did you mean 'inside'?")


@case("config", "fp16 without gradient scaling")
def _(ctx):
    return "--set mixed_precision=fp16", expect(train(ctx, "--set", "mixed_precision=fp16"), "fp16", "'bf16'")


@case("config", "variant label with another variant's settings")
def _(ctx):
    with pytest.raises(ConfigError) as err:
        TrainConfig(exemplars="data/inside", variant="reversion")
    return "TrainConfig(exemplars=..., variant='reversion')", expect(str(err.value), "variant='reversion' means", "steer='prepositions'")


@case("config", "replace(variant=...)")
def _(ctx):
    copy = TrainConfig(exemplars="data/inside").replace(variant="textual_inversion")
    assert (copy.steer, copy.importance_sampling, copy.inverse, copy.hf_suppress) == ("none", False, False, "off")
    return "TrainConfig(...).replace(variant='textual_inversion')", (
        f"accepted: the copy carries the variant's settings (steer={copy.steer!r}, "
        f"importance_sampling={copy.importance_sampling}, inverse={copy.inverse}, hf_suppress={copy.hf_suppress!r})")


@case("config", "retry after a run diverged before its first checkpoint")
def _(ctx):
    out = ctx.tmp / "runs"
    first = expect(train(ctx, "--set", "learning_rate=1e30", "--set", "steps=3", "--set", "checkpoint_every=2", out=out),
                   "loss became nan", "No checkpoint was written yet")
    assert "resume" not in first
    again = train(ctx, "--set", "steps=3", "--set", "checkpoint_every=2", out=out)
    return "learning_rate=1e30, then the same folder with a sane one", expect(again, "seed0", "nothing learned", "delete that folder")


# --- files and folders ----------------------------------------------------------------------------

@case("files", "output folder is read-only")
def _(ctx):
    real = run_state.tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # as root a chmod would not stop the write
        if dir is not None and Path(dir) == ctx.tmp / "locked":
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    (ctx.tmp / "locked").mkdir()
    ctx.monkeypatch.setattr(run_state.tempfile, "TemporaryFile", read_only)
    no_model_load(ctx)
    message = train(ctx, "--set", "steps=1", out=ctx.tmp / "locked")
    return "--out on a read-only folder", expect(message, "locked", "not a writable folder (Permission denied)", "--out")


@case("files", "disk full at the first checkpoint")
def _(ctx):
    def full_disk(obj, handle):
        handle.write(b"\0" * 64)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    ctx.monkeypatch.setattr(runs.torch, "save", full_disk)
    message = train(ctx, "--set", "steps=2", "--set", "checkpoint_every=1")
    folder = ctx.tmp / "runs" / "inside" / "inv_reversion" / "seed0"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    return "a disk that fills while checkpoint.pt is written", expect(message, "checkpoint.pt", "Free disk space")


@case("files", "text.json typo, checked before the model loads")
def _(ctx):
    data = shutil.copytree(ctx.data, ctx.tmp / "inside")
    (data / "text.json").write_text('{"0.png": ["cat {} dog"] "1.png": []}')
    no_model_load(ctx)
    message = cli(ctx, "train", "--model", ctx.model, "--exemplars", str(data), "--out", str(ctx.tmp / "runs"), *TINY)
    return "text.json with a missing comma", expect(message, "text.json", "invalid JSON at line 1", "missing comma")


@case("files", "an exemplar of 4000 x 4000 px")
def _(ctx):
    data = shutil.copytree(ctx.data, ctx.tmp / "inside")
    Image.new("RGB", (4000, 4000), (200, 30, 30)).save(data / "0.png")
    seen = []
    original = run_state.encode_exemplars
    ctx.monkeypatch.setattr(run_state, "encode_exemplars", lambda c, e, *a: seen.extend(im.size for im in e.images) or original(c, e, *a))
    config = TrainConfig.from_params({**ctx.params, "exemplars": str(data), "steps": 1})
    trainer.train(config, ctx.tmp / "run", components=ctx.components, progress=False)
    assert set(seen) == {(16, 16)}
    return "0.png of 4000 x 4000 px", f"accepted: squashed to {seen[0][0]} x {seen[0][1]} px as it is read; the full image is not kept"


@case("files", "resume a finished run")
def _(ctx):
    config = TrainConfig.from_params({**ctx.params, "steps": 1})
    folder = trainer.train(config, ctx.tmp / "run", components=ctx.components, progress=False)
    before = {name: (folder / name).read_bytes() for name in ("manifest.json", "done.json", "learned/r.safetensors")}
    trainer.train(config, folder, components=ctx.components, resume=True, progress=False)
    assert all((folder / name).read_bytes() == data for name, data in before.items())
    return "train(..., resume=True) on a complete run", "accepted: nothing is rewritten (manifest.json keeps where and when the run was made)"


@case("files", "permissions of what a run writes")
def _(ctx):
    config = TrainConfig.from_params({**ctx.params, "steps": 1})
    folder = trainer.train(config, ctx.tmp / "run", components=ctx.components, progress=False)
    modes = {p.relative_to(folder).as_posix(): oct(p.stat().st_mode & 0o777) for p in sorted(folder.rglob("*")) if p.is_file()}
    assert set(modes.values()) == {"0o644"}, modes
    return "a finished run folder", f"every file is 0644, learned ones too ({', '.join(sorted(modes))})"


# --- generate -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_model, tiny_data, tmp_path_factory):
    """One run of each kind, trained once for the generate cases."""
    root = tmp_path_factory.mktemp("bad_input_runs")
    params = dict(exemplars=str(tiny_data), model=str(tiny_model), revision="local", resolution=16, steps=1,
                  batch_size=2, grad_accum=1, hf_sigma=0.8)
    from invrev.models import load_components

    components = load_components(str(tiny_model))
    return {variant: trainer.train(TrainConfig.from_params({**params, "variant": variant}), root / variant,
                                   components=components, progress=False) for variant in ("inv_reversion", "sd")}


def gen(ctx, *args: str) -> int:
    return main(["generate", "--steps", "2", "--out", str(ctx.tmp / "gen"), *args])


@case("generate", "same folder and prompt, a new seed")
def _(ctx):
    run = str(ctx.trained["inv_reversion"])
    assert gen(ctx, "--run", run, "--prompt", "a cat <r> a dog", "--seeds", "0") == 0
    ctx.read_stderr()
    first = sorted(p.name for p in (ctx.tmp / "gen").iterdir())
    message = cli(ctx, "generate", "--steps", "2", "--out", str(ctx.tmp / "gen"), "--run", run,
                  "--prompt", "a cat <r> a dog", "--seeds", "1")
    assert sorted(p.name for p in (ctx.tmp / "gen").iterdir()) == first == ["000_a_cat_r_a_dog_seed0.png", "grid.png"]
    return "generate twice into one --out, seeds 0 then 1", expect(message, "grid.png", "another --out", "--overwrite")


@case("generate", "prompt without the learned token")
def _(ctx):
    message = cli(ctx, "generate", "--run", str(ctx.trained["inv_reversion"]), "--prompt", "a cat inside a dog",
                  "--out", str(ctx.tmp / "gen"))
    return "--prompt 'a cat inside a dog' with --run", expect(message, "none of the run's learned tokens", "<r>", "drop --run")


@case("generate", "an sd run folder")
def _(ctx):
    message = cli(ctx, "generate", "--run", str(ctx.trained["sd"]), "--prompt", "a cat inside a dog", "--out", str(ctx.tmp / "gen"))
    return "--run <an sd run>", expect(message, "`sd` run", "drop --run", "in words")


@case("generate", "run folder missing")
def _(ctx):
    message = cli(ctx, "generate", "--run", str(ctx.tmp / "runs" / "nowhere"), "--prompt", "a <r> b", "--out", str(ctx.tmp / "gen"))
    return "--run runs/nowhere", expect(message, "nowhere", "no such folder", "invrev train")


@case("generate", "zero denoising steps")
def _(ctx):
    message = cli(ctx, "generate", "--steps", "0", "--prompt", "a cat", "--out", str(ctx.tmp / "gen"))
    return "--steps 0", expect(message, "--steps 0", "at least 1")


# --- batch ----------------------------------------------------------------------------------------

@case("batch", "a run fails on its exemplar data")
def _(ctx):
    data = shutil.copytree(ctx.data, ctx.tmp / "inside")
    (data / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        load_exemplars(data)
    line = batch.headline(f"{type(err.value).__name__}: {err.value}")
    return "one corrupt image, summarised by the batch", expect(line, "DataError: 1 problem with the exemplar data:", "2.png", "re-export it")


# --- running the cases and the table --------------------------------------------------------------

def _normalise(text: str, ctx, basetemp: Path) -> str:
    """The answer without this session's paths: every folder of the pytest temporary root (the default
    one or ``--basetemp``) becomes ``<tmp>``, the tiny relation and model ``<data>`` and ``<model>``."""
    for path, name in ((ctx.data, "<data>"), (ctx.model, "<model>")):
        text = text.replace(path, name)
    return re.sub(re.escape(str(basetemp)) + r"/[^/\s]+", "<tmp>", text)


@pytest.fixture(scope="module")
def answer(tiny_model, tiny_data, trained, tmp_path_factory):
    """``answer(name)``: (area, input, answer with paths shortened) of one case, run the first time
    it is asked for in a folder, patches and a stderr of its own."""
    from invrev.models import load_components

    params = dict(exemplars=str(tiny_data), model=str(tiny_model), revision="local", resolution=16, batch_size=2,
                  grad_accum=1, hf_sigma=0.8)
    answers = {}

    def run(name: str) -> tuple[str, str, str]:
        if name not in answers:
            area, fn = CASES[name]
            err = io.StringIO()

            def read_stderr() -> str:  # what was printed since the last read, as capsys.readouterr().err
                text = err.getvalue()
                err.seek(0)
                err.truncate()
                return text

            with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stderr(err):
                ctx = SimpleNamespace(model=str(tiny_model), data=str(tiny_data), components=load_components(str(tiny_model)),
                                      trained=trained, tmp=tmp_path_factory.mktemp("case"), read_stderr=read_stderr,
                                      monkeypatch=monkeypatch, params=params)
                given, message = fn(ctx)
            answers[name] = (area, given, _normalise(message, ctx, tmp_path_factory.getbasetemp()))
        return answers[name]

    return run


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, answer):
    answer(name)


def render(results: dict[str, tuple[str, str, str]]) -> str:
    cell = lambda s: s.replace("|", "\\|").replace("\n", " / ")
    lines = [
        "# Bad input and what invrev answers",
        "",
        "Generated by `tests/test_bad_input.py`, which runs every case below and checks that the answer",
        "names the file, field or token and the fix, with no traceback and nothing the user made lost.",
        "Regenerate: `INVREV_WRITE_BAD_INPUT=1 python -m pytest tests/test_bad_input.py`. Paths are",
        "shortened to `<tmp>`, `<data>` (a tiny relation folder) and `<model>` (a tiny model).",
        "",
        f"{len(results)} cases.",
        "",
        "| area | case | input | answer |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {area} | {cell(name)} | `{cell(given)}` | {cell(message)} |" for name, (area, given, message) in results.items()]
    return "\n".join(lines) + "\n"


def test_table_is_committed(answer):
    text = render({name: answer(name) for name in CASES})
    if os.environ.get("INVREV_WRITE_BAD_INPUT"):
        TABLE.write_text(text)
    assert TABLE.is_file() and TABLE.read_text() == text, (
        "docs/bad_input.md is out of date: INVREV_WRITE_BAD_INPUT=1 python -m pytest tests/test_bad_input.py")
