"""The README's short tables: computed from a record, and held to it."""

import pytest

from invrev import record, summary
from invrev.paths import REPO_ROOT

from tests.test_claims import _run


def _record():
    """SD 0.25, Textual Inversion 0.75, ReVersion 0.5, Inv-ReVersion missing on one named, one unnamed relation."""
    return [_run(r, v, s, rate) for r in ("on", "hug") for s in (0, 1)
            for v, rate in (("sd", 0.25), ("textual_inversion", 0.75), ("reversion", 0.5))]


def test_table1_pools_by_kind_and_bolds_the_single_best():
    lines = summary.table1(_record()).splitlines()
    assert lines[0] == "| measure | SD (words) | Textual Inversion | ReVersion | Inv-ReVersion |"
    assert lines[2].startswith("| all 10 relations | 0.25 [") and "| **0.75** [" in lines[2] and lines[2].endswith("| – |")
    assert " ±0.00 " in lines[2]  # two seeds with the same rate
    assert lines[4] == "| 5 unnamed relations | 0.25 | **0.75** | 0.50 | – |"
    assert lines[5] == "| 5 named relations | 0.25 | **0.75** | 0.50 | – |"
    tied = [_run("on", "sd", 0, 0.5), _run("on", "textual_inversion", 0, 0.5)]
    assert "**" not in summary.table1(tied).splitlines()[2]


def test_table2_bolds_the_lowest_fusion():
    runs = [_run("on", "inv_reversion", 0, 0.5, fusion=0.25), _run("on", "no_inverse", 0, 0.25, fusion=0.5),
            _run("on", "no_pos_weight", 0, 0.5, fusion=0.125)]
    lines = summary.table2(runs).splitlines()
    assert lines[0].startswith("| ablation (Table 2) | Inv-ReVersion | w/o inverse text |")
    assert lines[3].startswith("| fusion rate (lower is better) | 0.25 [") and "| **0.12** [" in lines[3]
    assert lines[2].endswith("| – |")  # no w/o HF suppressor runs


def test_render_rewrites_blocks_and_names_a_bad_marker(tmp_path):
    text = "intro\n<!-- invrev:table table1 rec -->\n| old |\n<!-- /invrev:table -->\nend\n"
    fresh = summary.render(text, tmp_path, lambda path: _record())
    assert fresh.startswith("intro\n<!-- invrev:table table1 rec -->\n| measure |") and fresh.endswith("<!-- /invrev:table -->\nend\n")
    assert summary.render(fresh, tmp_path, lambda path: _record()) == fresh
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        summary.render(text.replace("table1", "table9"), tmp_path, lambda path: _record())
    with pytest.raises(FileNotFoundError, match="'rec' named by an invrev:table marker holds no evaluated runs"):
        summary.render(text, tmp_path, lambda path: [])


def test_readme_tables_match_their_records():
    readme = (REPO_ROOT / "README.md").read_text()
    assert summary.blocks(readme), "the README shows no table computed from a record"
    assert summary.render(readme, REPO_ROOT, record.load_runs) == readme, "run `invrev tables README.md`"


def test_unnamed_table_counts_lifts_and_reads_the_handle_from_the_report(tmp_path):
    import json

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"words_report": [{"relation": "hug", "handle": {"relation_accuracy": 0.9}}]}))
    runs = [_run("hug", "sd", 0, 0.0), _run("hug", "textual_inversion", 0, 0.5), _run("hug", "reversion", 0, 0.25),
            _run("hug", "inv_reversion", 0, 0.5), _run("on", "sd", 0, 0.9)]
    lines = summary.unnamed(runs, manifest).splitlines()
    assert lines[0] == ("| relation | in words | Textual Inversion | ReVersion | Inv-ReVersion | w/o inverse text "
                        "| the handle (upper bound) |")
    assert lines[2] == "| hug | 0.00 | 0.50 | 0.25 | 0.50 | – | 0.90 |"  # a tie for best: nothing bold
    assert lines[3] == "| lifted ≥ 0.40 above words | | 1 of 1 | 0 of 1 | 1 of 1 | 0 of 1 | 1 of 1 |"
    assert len(lines) == 4  # "on" is named


def test_worlds_block_reads_several_records_and_labels_the_known_ones(tmp_path):
    def world(mine, theirs):  # two seeds: a verdict needs two runs to pair
        return [_run("hug", v, s, rate + 0.05 * s) for s in (0, 1) for v, rate in (("inv_reversion", mine), ("no_inverse", theirs))]

    records = {"results/world_v1": world(0.3, 0.8), "results/latest": world(0.8, 0.3)}
    text = "<!-- invrev:table worlds results/world_v1+results/latest -->\n<!-- /invrev:table -->\n"
    lines = summary.render(text, tmp_path, lambda path: records[str(path.relative_to(tmp_path))]).splitlines()
    assert lines[1] == "| claim | world v1 | world v2 |"
    assert "| removing inverse text lowers relation accuracy (Table 2) | does not hold | holds |" in lines
    with pytest.raises(ValueError, match="table 'table1' reads one record"):
        summary.render(text.replace("worlds", "table1"), tmp_path, lambda path: records[str(path.relative_to(tmp_path))])
