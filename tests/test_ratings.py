"""Ratings and ranks: a person's rows written and read back through the widget's functions, the
average user rank and the automatic rank against values worked out by hand, and the claim checks."""

import random
import re

import pytest

from invrev import claims, layout, ratings, tables
from invrev.config import TABLE1, TABLE2, VARIANTS


def test_rank_is_the_papers_scale_with_ties_averaged():
    assert tables.rank({"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3}) == {"a": 1, "b": 4, "c": 3, "d": 2}
    # b and c tie for ranks 2 and 3; all four tied share 2.5
    assert tables.rank({"a": 0.0, "b": 0.5, "c": 0.5, "d": 1.0}) == {"a": 1, "b": 2.5, "c": 2.5, "d": 4}
    assert set(tables.rank(dict.fromkeys("abcd", 0.0)).values()) == {2.5}


def test_image_seeds_and_grid_cells_invert():
    """The evaluation layout read back: an image's seed gives its prompt, a grid cell gives its image."""
    import numpy as np

    assert layout.image_seed(2, 7, 3) == 200_703 and layout.image_seed(2, 7, 3, seen=True) == 250_703
    assert layout.prompt_index(layout.image_seed(2, 7, 3)) == 7
    samples, prompts = 3, 10
    images = [np.full((6, 6, 3), 10 * i + k, dtype=np.uint8) for i in range(prompts) for k in range(samples)]
    records = [{"seed": layout.image_seed(1, i, k)} for i in range(prompts) for k in range(samples)]
    assert layout.samples_per_prompt(records) == samples
    grid = layout.eval_grid(images, samples)
    assert grid.size == (2 + 6 * 8, 2 + 4 * 8)  # 6 columns: 2 prompts x 3 samples; 4 rows: the first 8 prompts
    for index in range(layout.GRID_PROMPTS):
        for k in range(samples):
            assert np.array_equal(np.asarray(layout.grid_tile(grid, samples, index, k)), images[index * samples + k])
    assert layout.grid_tile(grid, samples, layout.GRID_PROMPTS) is None  # scored, not shown
    assert np.array_equal(np.asarray(layout.grid_rows(grid, samples, 3)), np.asarray(grid)[: 2 + 2 * 8])


def test_a_person_rates_two_sets_and_the_average_user_rank_is_their_mean(tmp_path):
    path = tmp_path / "ratings.csv"
    rng = random.Random(0)
    first = ratings.sample_rating_set("inside", rng, TABLE1, seeds=[0, 1])
    second = ratings.sample_rating_set("inside", rng, TABLE1, seeds=[0, 1])
    assert sorted(first.variants) == sorted(TABLE1) and "<r>" in first.prompt
    # what the widget does on "save": rows for both criteria, appended
    for rating_set, best in ((first, "inv_reversion"), (second, "reversion")):
        for criterion in ratings.CRITERIA:
            ranks = {v: i + 1 for i, v in enumerate(sorted(TABLE1, key=lambda v: v == best))}
            ratings.append_ratings(path, ratings.rows_for("ada", rating_set, criterion, ranks))
    rows = ratings.read_ratings(path)
    assert len(rows) == 2 * 2 * 4
    assert path.read_text().splitlines()[0] == ",".join(ratings.FIELDS)
    assert rows[0]["rater"] == "ada" and rows[0]["relation"] == "inside" and isinstance(rows[0]["seed"], int)
    aur = ratings.average_user_rank(rows)
    # set 1: sd 1, ti 2, reversion 3, inv 4; set 2: sd 1, ti 2, inv 3, reversion 4
    expected = {"sd": 1.0, "textual_inversion": 2.0, "reversion": 3.5, "inv_reversion": 3.5}
    assert aur == {c: {"inside": expected} for c in ratings.CRITERIA}


def test_tied_images_share_the_mean_of_their_places(tmp_path):
    rating_set = ratings.sample_rating_set("on", random.Random(1), TABLE1)
    first, second, third, fourth = rating_set.variants
    given = {first: 4, second: 3, third: 3, fourth: 1}  # the person cannot tell the middle two apart
    rows = ratings.rows_for("ada", rating_set, "relation", given, ties=True)
    assert {r["variant"]: r["rank"] for r in rows} == {first: 4, second: 2.5, third: 2.5, fourth: 1}
    assert ratings.rows_for("ada", rating_set, "relation", {v: 1 for v in given}, ties=True)[0]["rank"] == 2.5  # all alike
    path = ratings.append_ratings(tmp_path / "ratings.csv", rows)
    assert ",2.5\n" in path.read_text() and ",4\n" in path.read_text()
    aur = ratings.average_user_rank(ratings.read_ratings(path))["relation"]["on"]
    assert aur[second] == aur[third] == 2.5 and sum(aur.values()) == 10  # a set still averages (n + 1) / 2


def test_bad_rankings_are_refused(tmp_path):
    rating_set = ratings.sample_rating_set("on", random.Random(1), TABLE1)
    good = {v: i + 1 for i, v in enumerate(rating_set.variants)}
    with pytest.raises(ratings.RatingError, match="1..4, each once.*ties=True"):
        ratings.rows_for("ada", rating_set, "entity", {**good, rating_set.variants[0]: 2})
    with pytest.raises(ratings.RatingError, match="whole numbers 1..4"):
        ratings.rows_for("ada", rating_set, "entity", {**good, rating_set.variants[0]: 5}, ties=True)
    with pytest.raises(ratings.RatingError, match="exactly once"):
        ratings.rows_for("ada", rating_set, "entity", {v: good[v] for v in rating_set.variants[:3]})
    with pytest.raises(ratings.RatingError, match="criterion"):
        ratings.rows_for("ada", rating_set, "beauty", good)
    with pytest.raises(ratings.RatingError, match="rater"):
        ratings.rows_for(" ", rating_set, "entity", good)
    bad = tmp_path / "ratings.csv"
    bad.write_text("who,rank\nada,1\n")
    with pytest.raises(ratings.RatingError, match="header"):
        ratings.read_ratings(bad)


def test_rating_is_blind_until_the_rater_finishes_and_a_set_is_saved_once(tmp_path):
    path = tmp_path / "ratings.csv"
    session = ratings.RatingSession("ada", path, ["inside", "hug"], TABLE1, seeds=[0, 1], rng=random.Random(3))
    seen = []  # everything the widget shows the rater before they finish
    for best in range(3):
        session.next_set()
        shown = session.shown()
        assert len(shown["exemplars"]) == 6 and all(p.is_file() for p in shown["exemplars"])
        assert "<r>" not in shown["prompt"] and shown["relation"] in shown["prompt"]
        seen += [shown["relation"], shown["prompt"], *shown["instructions"], *map(str, shown["exemplars"])]
        with pytest.raises(ratings.RatingError) as refused:
            session.save({"entity": [1, 1, 2, 3], "relation": [1, 2, 3, 4]})
        seen.append(str(refused.value))
        ranks = [1, 2, 3, 4]
        ranks.insert(best, ranks.pop())
        seen.append(session.save({"entity": ranks, "relation": ranks}))
        with pytest.raises(ratings.RatingError, match="draw a new set") as again:
            session.save({"entity": ranks, "relation": ranks})
        seen.append(str(again.value))
    assert "relation of the exemplar images" in " ".join(seen) and "colour and shape" in " ".join(seen)
    names = [*VARIANTS, *tables.PAPER_NAMES.values()]
    leaked = [n for n in names for text in seen if re.search(rf"(?i)\b{re.escape(n)}\b", text)]
    assert leaked == [], f"method names shown before the rater finished: {leaked}"
    rows = ratings.read_ratings(path)
    assert len(rows) == 3 * 2 * 4 and ratings.study_size(rows) == (1, 3)

    # the same set again, from a new session of the same rater: refused; another rater may rate it
    later = ratings.RatingSession("ada", path, ["inside", "hug"], TABLE1, seeds=[0, 1])
    later.current = session.saved[0]
    with pytest.raises(ratings.RatingError, match="already saved"):
        later.save({"entity": [1, 2, 3, 4], "relation": [1, 2, 3, 4]})
    other = ratings.RatingSession("bo", path, ["inside"], TABLE1)
    other.current = session.saved[0]
    assert other.save({"entity": [1, 2, 3, 4], "relation": [4, 3, 2, 1]}).startswith("saved")
    assert ratings.study_size(ratings.read_ratings(path)) == (2, 4)

    told = session.finish()  # only now: which method drew which image
    assert all(tables.PAPER_NAMES[v] in told for v in TABLE1) and "average relation rank" in told
    with pytest.raises(ratings.RatingError, match="finished"):
        session.next_set()


def _run(relation, variant, seed, hits_per_prompt, criterion="relation", samples=2):
    """A fake evaluated run: prompt i has ``hits_per_prompt[i]`` of ``samples`` images passing."""
    images = [{"seed": layout.image_seed(seed, i, k), "prompt": f"p{i}", "entity": k < hits, "relation": k < hits,
               "fusion": k >= hits}
              for i, hits in enumerate(hits_per_prompt) for k in range(samples)]
    return {"relation": relation, "variant": variant, "seed": seed, "images": images}


def test_automatic_rank_by_hand():
    runs = [
        _run("on", "sd", 0, [0, 1]), _run("on", "textual_inversion", 0, [1, 1]),
        _run("on", "reversion", 0, [2, 0]), _run("on", "inv_reversion", 0, [2, 2]),
        _run("on", "no_hf", 0, [2, 2]),  # not in Table 1: ignored
    ]
    # prompt 0 scores: sd 0, ti .5, rev 1, inv 1 -> ranks 1, 2, 3.5, 3.5
    # prompt 1 scores: sd .5, ti .5, rev 0, inv 1 -> ranks 2.5, 2.5, 1, 4
    got = tables.automatic_rank(runs, TABLE1, "relation")["on"]
    assert got == {"sd": 1.75, "textual_inversion": 2.25, "reversion": 2.25, "inv_reversion": 3.75}
    # a set where one variant has no run is left out rather than ranked on three
    assert tables.automatic_rank(runs[:3], TABLE1, "relation") == {}


def test_accuracy_pools_seeds_and_reports_their_spread():
    runs = [_run("on", "sd", 0, [2, 2]), _run("on", "sd", 1, [0, 2]), _run("in", "sd", 0, [0, 0])]
    acc = tables.accuracy(runs, "sd", "relation", "on")
    assert acc["rate"] == 6 / 8 and acc["n"] == 8 and acc["seeds"] == 2
    assert acc["seed_sd"] == pytest.approx(((1 - 0.75) ** 2 * 2) ** 0.5)  # rates 1.0 and 0.5
    assert tables.accuracy(runs, "sd", "relation")["rate"] == 6 / 12
    assert tables.accuracy(runs, "reversion", "relation") is None


def _table_runs(order):
    """Two relations, every variant of both tables; ``order`` lists variants from worst to best
    (the i-th passes i of 8 images of every prompt)."""
    return [_run(rel, v, 0, [i] * 40, samples=8) for rel in ("on", "inside") for i, v in enumerate(order)]


def test_claims_follow_the_numbers():
    good = ["sd", "textual_inversion", "no_inverse", "no_pos_weight", "no_hf", "reversion", "inv_reversion"]
    found = {c["claim"]: c["verdict"] for c in claims.paper_claims(_table_runs(good))}
    assert found["Inv-ReVersion ranks first on relation accuracy in every relation (Table 1)"] == "holds"
    assert found["relation rank rises SD < Textual Inversion < ReVersion < Inv-ReVersion (Table 1)"] == "holds"
    assert [v for c, v in found.items() if "Table 2" in c] == ["holds"] * 3
    bad = list(reversed(good))
    found = {c["claim"]: c["verdict"] for c in claims.paper_claims(_table_runs(bad))}
    assert found["Inv-ReVersion ranks first on relation accuracy in every relation (Table 1)"] == "does not hold"
    assert found["relation rank rises SD < Textual Inversion < ReVersion < Inv-ReVersion (Table 1)"] == "does not hold"
    assert {v for c, v in found.items() if "Table 2" in c} <= {"does not hold", "cannot tell"}


def test_markdown_table_has_a_row_per_relation_and_the_user_rank():
    runs = _table_runs(list(TABLE2) + ["sd", "textual_inversion", "reversion"])
    user = {"relation": {"on": {"inv_reversion": 3.5}}}
    table = tables.markdown_table(runs, TABLE1, "relation", user).splitlines()
    assert len(table) == 2 + 2 + 1  # header, rule, two relations, all
    assert table[2].startswith("| on |") and "user 3.50" in table[2] and "rank" in table[2]
    assert table[-1].startswith("| **all** |")


def test_an_exported_rating_session_loads_into_the_claims_as_user_ranks(tmp_path):
    """A made-up ranking (never a person's): Inv-ReVersion first in one set, ReVersion in the other."""
    path = tmp_path / "ratings.csv"
    rng = random.Random(1)
    for best in ("inv_reversion", "reversion"):
        rating_set = ratings.sample_rating_set("inside", rng, TABLE1, seeds=[0])
        for criterion in ratings.CRITERIA:
            ranks = {v: i + 1 for i, v in enumerate(sorted(TABLE1, key=lambda v: v == best))}
            ratings.append_ratings(path, ratings.rows_for("made-up", rating_set, criterion, ranks))
    rows = ratings.read_ratings(path)
    runs = _table_runs(["sd", "textual_inversion", "no_inverse", "no_pos_weight", "no_hf", "reversion", "inv_reversion"])
    found = {c["claim"]: c for c in claims.paper_claims(runs, ratings.average_user_rank(rows), ratings.study_size(rows))}
    scorer = found["Inv-ReVersion ranks first on relation accuracy in every relation (Table 1)"]
    people = found["Inv-ReVersion ranks first on relation accuracy in every relation (Table 1, user ranks of 1 people over 2 sets)"]
    assert scorer["verdict"] == "holds"
    assert people["verdict"] == "cannot tell" and people["evidence"] == "first in 0 of 1 relations, tied for first in 1"
    assert not any("user ranks" in c for c in {c["claim"] for c in claims.paper_claims(runs)})


def test_the_rating_tool_shows_the_committed_records_evaluated_images():
    """The rating mode on the shipped record: its runs were trained on the shipped model, their tokens
    load into it, and each image shown is the one the evaluation drew (sample 0 of the prompt)."""
    import numpy as np
    import torch

    from invrev import generate, measure, runs
    from invrev.models import REPO_ROOT, WORLD_MODEL, load_components

    torch.set_num_threads(1)
    record = REPO_ROOT / "results" / "latest"
    relation, variants = "painted_on", ("sd", "textual_inversion", "reversion", "inv_reversion")
    shipped = runs.model_fingerprint(str(REPO_ROOT / WORLD_MODEL))
    for variant in variants[1:]:
        assert runs.recorded_fingerprint(runs.run_dir(record, relation, variant, 0)) == shipped, variant
    rating_set = ratings.RatingSet(relation, 1, measure.items(relation, "token", 2)[1].prompt, 0, variants)
    components = load_components(str(REPO_ROOT / WORLD_MODEL))
    shown = ratings.draw_set(components, record, rating_set)
    for variant, image in zip(variants, shown):
        if variant != "sd":
            generate.load_run_tokens(components, runs.run_dir(record, relation, variant, 0))
        kind = "words" if variant == "sd" else "token"
        evaluated = measure.draw(components, measure.items(relation, kind, 2), 0, 2)[0][2]  # pair 1, sample 0
        assert np.abs(image.astype(float) - evaluated.astype(float)).max() <= 2, variant
    assert not np.array_equal(shown[2], shown[3])  # the learned tokens differ, and so do their images
