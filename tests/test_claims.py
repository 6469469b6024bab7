"""The readers' questions answered from runs: relation kinds, fusion, the suppressor and detail."""

import pytest

from invrev import claims, layout


def _run(relation, variant, seed, rate, fusion=0.0, n=80):
    """A fake evaluated run: the first ``rate`` share of its n images pass, the first ``fusion`` share fuse."""
    images = [{"seed": layout.image_seed(seed, i // 4, i % 4), "prompt": f"p{i // 4}", "entity": i < rate * n,
               "relation": i < rate * n, "fusion": i < fusion * n} for i in range(n)]
    return {"relation": relation, "variant": variant, "seed": seed, "images": images, "config": {"hf_sigma": 0.8}}


def _seeds(relation, variant, rate, fusion=0.0, step=0.05):
    """Two seeds of a run, the second ``step`` higher: a verdict pairs runs, and needs two pairs."""
    return [_run(relation, variant, 0, rate, fusion), _run(relation, variant, 1, rate + step, fusion and fusion + step)]


def test_a_difference_is_judged_over_runs_not_images():
    """Pooled images differ with disjoint Wilson intervals (0.60 against 0.40 over 160 images each),
    but the two relations disagree: run by run the difference could be either sign."""
    runs = [_run("hug", "inv_reversion", 0, 0.9), _run("hug", "no_inverse", 0, 0.2),
            _run("on", "inv_reversion", 0, 0.3), _run("on", "no_inverse", 0, 0.6)]
    d = claims.paired_difference(runs, "inv_reversion", "no_inverse", "relation")
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.2) and d["ci95"][0] < 0 < d["ci95"][1]
    assert claims.pooled(runs, "inv_reversion", "relation")["ci95"][0] > claims.pooled(runs, "no_inverse", "relation")["ci95"][1]
    verdict = claims.compare(runs, "inv_reversion", "no_inverse", "relation", better="higher", claim="c")
    assert verdict["verdict"] == "cannot tell" and "paired over 2 runs, difference +0.20 [" in verdict["evidence"]
    agree = runs[:2] + [_run("on", "inv_reversion", 0, 0.7), _run("on", "no_inverse", 0, 0.1)]
    assert claims.compare(agree, "inv_reversion", "no_inverse", "relation", better="higher", claim="c")["verdict"] == "holds"
    one = claims.paired_difference(runs[:2], "inv_reversion", "no_inverse", "relation")
    assert one["n"] == 1 and one["ci95"] is None  # one pair: no interval, and no verdict
    assert claims.compare(runs[:2], "inv_reversion", "no_inverse", "relation", better="higher", claim="c")["verdict"] == "cannot tell"
    assert claims.paired_difference(runs, "inv_reversion", "no_hf", "relation") is None


def test_t_quantiles_match_the_table_and_its_continuation():
    assert claims.t_quantile_975(1) == 12.706 and claims.t_quantile_975(29) == 2.045
    assert claims.t_quantile_975(31) == pytest.approx(2.040, abs=0.001)  # exact 2.0395
    assert claims.t_quantile_975(60) == pytest.approx(2.000, abs=0.001)  # exact 2.0003
    assert claims.t_quantile_975(1000) == pytest.approx(1.962, abs=0.001)
    with pytest.raises(ValueError, match="at least 1"):
        claims.t_quantile_975(0)


def test_pos_weighting_claim_reads_behavioural_relations_only():
    runs = [_run(r, "inv_reversion", 0, 0.8) for r in ("hug", "ride_on", "on")]
    runs += [_run(r, "no_pos_weight", 0, 0.3) for r in ("hug", "ride_on")] + [_run("on", "no_pos_weight", 0, 0.9)]
    claim = claims.pos_weight_claim(runs)
    assert claim["verdict"] == "holds" and "behavioural +0.50" in claim["evidence"] and "spatial -0.10" in claim["evidence"]
    flipped = [{**r, "variant": {"inv_reversion": "no_pos_weight", "no_pos_weight": "inv_reversion"}[r["variant"]]} for r in runs]
    assert claims.pos_weight_claim(flipped)["verdict"] == "does not hold"
    close = [_run("hug", "inv_reversion", 0, 0.50), _run("hug", "no_pos_weight", 0, 0.45)]
    assert claims.pos_weight_claim(close)["verdict"] == "cannot tell"
    assert claims.pos_weight_claim([_run("on", "inv_reversion", 0, 0.8)]) is None  # no behavioural relation
    table = claims.kind_table(runs, variants=("inv_reversion", "no_pos_weight")).splitlines()
    assert table[2].startswith("| behavioural (hug, ride_on) | 0.80 [") and table[3].startswith("| spatial (on) |")


def test_fusion_claim_and_table():
    runs = _seeds("hug", "inv_reversion", 0.5, fusion=0.05) + _seeds("hug", "no_inverse", 0.5, fusion=0.40, step=0.1)
    assert claims.fusion_claim(runs)["verdict"] == "holds"
    runs[0]["images"] = _run("hug", "inv_reversion", 0, 0.5, fusion=0.75)["images"]
    runs[1]["images"] = _run("hug", "inv_reversion", 1, 0.5, fusion=0.8)["images"]
    assert claims.fusion_claim(runs)["verdict"] == "does not hold"
    table = claims.rate_table(runs, "fusion", ("inv_reversion", "no_inverse")).splitlines()
    assert table[2] == "| hug | " + table[-1].split("| ", 2)[2] and table[2].startswith("| hug | 0.78 [")  # 0.75 and 0.80 pooled


def test_exemplar_hf_share_measures_detail(tmp_path):
    """Fine stripes are mostly above the filter, a flat square almost not at all."""
    import numpy as np
    from PIL import Image

    def folder(name, image):
        path = tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path / "0.png")
        return path

    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 255
    square = np.zeros((32, 32, 3), np.uint8)
    square[8:24, 8:24] = 255
    assert claims.exemplar_hf_share(folder("stripes", stripes)) > 0.8
    assert claims.exemplar_hf_share(folder("square", square)) < 0.2
    with pytest.raises(FileNotFoundError, match="no exemplar images"):
        claims.exemplar_hf_share(tmp_path)


def test_suppressor_claim_follows_the_correlation():
    rows = [{"relation": f"r{i}", "hf_share": i / 10, "effect": i / 20} for i in range(6)]
    assert claims.suppressor_claim([], rows)["verdict"] == "holds"
    assert claims.suppressor_claim([], [{**r, "effect": -r["effect"]} for r in rows])["verdict"] == "does not hold"
    mixed = [{**r, "effect": e} for r, e in zip(rows, [0.1, -0.1, 0.2, -0.2, 0.0, 0.05])]
    assert claims.suppressor_claim([], mixed)["verdict"] == "cannot tell"
    assert claims.suppressor_claim([], rows[:4]) is None
    assert claims.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_hf_effects_read_the_benchmark_exemplars():
    runs = [_run(r, v, 0, rate) for r in ("painted_on", "on") for v, rate in (("inv_reversion", 0.6), ("no_hf", 0.5))]
    rows = claims.hf_effects(runs)
    shares = [r["hf_share"] for r in rows]
    assert {r["relation"] for r in rows} == {"painted_on", "on"} and shares == sorted(shares, reverse=True)
    assert all(r["effect"] == pytest.approx(0.1) and 0 < r["hf_share"] < 1 for r in rows)
    assert "| painted_on |" in claims.hf_table(rows)


def test_claims_across_worlds_line_up_by_claim():
    with_premise = _seeds("hug", "inv_reversion", 0.8) + _seeds("hug", "no_inverse", 0.3, step=0.1)
    without = _seeds("hug", "inv_reversion", 0.3) + _seeds("hug", "no_inverse", 0.8, step=0.1) + [_run("on", "no_hf", 0, 0.5)]
    rows = claims.across_worlds({"v2": with_premise, "v1": without})
    inverse = next(r for r in rows if r["claim"].startswith("removing inverse text"))
    assert inverse["v2"]["verdict"] == "holds" and inverse["v1"]["verdict"] == "does not hold"
    table = claims.worlds_table(rows, ["v2", "v1"]).splitlines()
    assert table[0] == "| claim | v2 | v1 |"
    assert any(line.startswith("| removing inverse text lowers relation accuracy (Table 2) | **holds** (0.8") for line in table)
    assert all(set(r) == {"claim", "v2", "v1"} for r in rows)
    spearman = [{"claim": "c", "v1": {"verdict": "holds", "evidence": "|ρ| ≥ 0.65 needed"}, "v2": None}]
    assert claims.worlds_table(spearman, ["v1", "v2"]).splitlines()[2] == "| c | **holds** (\\|ρ\\| ≥ 0.65 needed) | – |"


def test_steer_claim_and_mechanism_groups():
    runs = (_seeds("hug", "reversion", 0.8) + _seeds("hug", "textual_inversion", 0.3, step=0.1)
            + [_run("hug", "inv_reversion", 0, 0.5), _run("hug", "no_pos_weight", 0, 0.5)])
    steer = claims.steer_claim(runs)
    assert steer["verdict"] == "holds" and steer["claim"].startswith("the steer loss")
    assert claims.steer_claim(runs[:2]) is None  # no Textual Inversion runs: nothing to compare
    v1 = _seeds("hug", "reversion", 0.3) + _seeds("hug", "textual_inversion", 0.8, step=0.1)
    rows = claims.across_worlds({"v2": runs, "v1": v1})
    groups = claims.by_mechanism(rows)
    assert set(groups) == set(claims.MECHANISMS)
    assert [r["v1"]["verdict"] for r in groups["relation-steering loss"]] == ["does not hold"]
    assert [r["claim"] for r in groups["POS weighting"]][0].startswith("removing POS weighting")
    assert not any(r["claim"].startswith("Inv-ReVersion ranks first") for g in groups.values() for r in g)


def test_widest_gap_names_the_relation_where_a_pair_differs_most():
    runs = [_run("hug", "inv_reversion", 0, 0.5), _run("hug", "no_inverse", 0, 0.6),
            _run("on", "inv_reversion", 0, 0.9), _run("on", "no_inverse", 0, 0.2)]
    gap = claims.widest_gap(runs, "inv_reversion", "no_inverse")
    assert gap["relation"] == "on" and gap["inv_reversion"] == pytest.approx(0.9) and gap["no_inverse"] == pytest.approx(0.2)
    assert claims.widest_gap(runs, "inv_reversion", "no_hf") is None


def test_headline_counts_the_paper_claims_per_world_and_moves_each_mechanism():
    with_premise = _seeds("hug", "inv_reversion", 0.8) + _seeds("hug", "no_inverse", 0.3, step=0.1)
    without = _seeds("hug", "inv_reversion", 0.3) + _seeds("hug", "no_inverse", 0.8, step=0.1)
    rows = claims.across_worlds({"v1": without, "v2": with_premise})
    text = claims.headline(rows, ["v1", "v2"])
    held = {label: sum(r[label]["verdict"] == "holds" for r in rows if r[label]) for label in ("v1", "v2")}
    assert f"{held['v1']} of " in text and f"in v1; {held['v2']} of " in text
    assert "inverse text expansion, does not hold → holds" in text
    assert "relation-steering loss, no runs → no runs" in text
