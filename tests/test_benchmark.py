"""The training-step benchmark (benchmarks/train_step.py) at tiny scale: its table is complete and sane."""

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module, its parts imported from beside it as running it would."""
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_step"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))
        for name in [n for n in sys.modules if n == "train_step" or n.startswith("train_step_")]:
            del sys.modules[name]


def test_tiny_table(bench, tmp_path):
    out = tmp_path / "bench.json"
    result = bench.main(["--scale", "tiny", "--steps", "2", "--warmup", "1", "--k", "2", "--out", str(out)])
    rows = {r["kind"]: r for r in result["rows"]}
    assert list(rows) == ["reference", "single", "multi"]
    for row in rows.values():
        assert row["error"] is None
        assert row["samples_per_s"] > 0 and row["flops_per_sample"] > 0
        assert row["samples_per_s"] == pytest.approx(row["samples_per_step"] / row["seconds_per_step"])
        assert row["relation_seconds"] == pytest.approx(24_000 / row["samples_per_s"])
    assert [rows[k]["samples_per_step"] for k in rows] == [8, 8, 16]  # 2x4, 8x1, 2 runs x 8x1
    assert rows["reference"]["speedup_vs_reference"] == 1.0
    assert rows["multi"]["speedup_vs_reference"] == pytest.approx(
        rows["multi"]["samples_per_s"] / rows["reference"]["samples_per_s"])
    assert "over 1 run" in rows["multi"]["note"]
    # A run's FLOPs per sample do not depend on how many runs share the batch; the reference's
    # include the VAE encoder and so are strictly larger.
    assert rows["multi"]["flops_per_sample"] == pytest.approx(rows["single"]["flops_per_sample"], rel=0.02)
    assert rows["reference"]["flops_per_sample"] > 1.1 * rows["single"]["flops_per_sample"]
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["rows"]] == [r["name"] for r in result["rows"]]
    assert "| invrev 2 runs (2x8x1) |" in out.with_suffix(".md").read_text()


def test_cuda_only_toggles_are_reported_not_run(bench):
    on_cpu = SimpleNamespace(device=bench.torch.device("cpu"))  # would fail if it tried to run one
    rows = bench.ablate(on_cpu, baseline=None, names=["tf32", "compile", "cudagraphs"])
    assert [r.note for r in rows] == ["TF32 matmul: needs CUDA", "torch.compile(unet): needs CUDA",
                                      "CUDA graphs (compile, reduce-overhead): needs CUDA"]


def test_validation_pairs_are_neither_test_nor_exemplar_pairs():
    from invrev.world import benchmark, scene

    for relation in scene.RELATIONS:
        val = benchmark.validation_pairs(relation, 20)
        assert len(set(val)) == 20
        assert not set(val) & set(benchmark.test_pairs(relation))
        assert not set(val) & set(benchmark.exemplar_pairs(relation))
        assert sum(a.shape == b.shape for a, b in val) == 10  # half same-shape, half not


def test_exemplar_pairs_are_the_shipped_exemplars():
    import json

    from invrev.world import benchmark, scene

    root = Path(__file__).resolve().parents[1] / "data" / "world" / "benchmark"
    for relation in scene.RELATIONS:
        shipped = json.loads((root / relation / "text.json").read_text())
        texts = [t[0] for t in shipped.values()]
        assert texts == [f"a {a.text} {{}} a {b.text}" for a, b in benchmark.exemplar_pairs(relation)]
