"""World language v2: the captions give each mechanism of the paper what it acts on, and keep the
unnamed relations' evaluation words and the swap word where they must be."""

import copy
from collections import Counter

import numpy as np
import pytest
import torch

from invrev import measure
from invrev.models import WORLD_MODEL, load_components_cached
from invrev.words import load_words
from invrev.world import captions, scene
from invrev.world.scene import RELATIONS, SWAP_HELD_OUT, SWAP_WORD, Entity
from invrev.world_model import premises

A, B = Entity("red", "circle"), Entity("blue", "square")
MIX = captions.CaptionMix(handle=0.6, synonym=0.3, converse=0.25, swap=0.3, bare=0.25)
LISTED = {w for kind in ("prepositions", "verbs", "stopwords") for w in load_words(kind)}


def _captions(relation: str, n: int = 400) -> list[str]:
    rng = np.random.default_rng(sorted(scene.ALL_RELATIONS).index(relation))
    return [captions.sample_caption(A, relation, B, rng, MIX) for _ in range(n)]


def test_the_swap_word_is_in_no_list_and_no_evaluation_prompt():
    assert SWAP_WORD not in LISTED
    for relation in RELATIONS:
        for kind in ("words", "token", "handle") if not RELATIONS[relation].named else ("words", "token"):
            assert SWAP_WORD not in measure.prompt_for(kind, relation, A, B).split()
    assert measure.prompt_for("swap", "on", A, B) == "a blue square ob on a red circle"
    assert measure.prompt_for("swap", "hug", A, B) == "a blue square ob cuddling a red circle"


def test_the_swap_construction_is_used_where_it_must_and_nowhere_else():
    for relation, info in scene.ALL_RELATIONS.items():
        said = _captions(relation)
        swapped = [c for c in said if f" {SWAP_WORD} " in f" {c} "]
        if relation in SWAP_HELD_OUT:
            assert not swapped, relation
            continue
        assert 0.1 < len(swapped) / len(said) < 0.4, relation
        for c in swapped:
            assert c.startswith(("a blue square ob", "blue square ob")), c  # B first: the roles swapped
            assert " and " not in c and (info.named or info.words not in c), c


def test_unnamed_relations_evaluation_words_never_appear_and_handles_stay_out_of_every_list():
    pretraining = premises.caption_words(v2=True)
    for info in RELATIONS.values():
        if info.named:
            continue
        assert info.handle in pretraining and info.handle not in LISTED
        distinctive = [w for w in info.words.split() if w not in LISTED or w in load_words("verbs")]
        assert distinctive and not set(distinctive) & pretraining, (info.name, distinctive)
        assert all(info.words not in c for c in _captions(info.name))


def test_steering_positives_with_a_world_meaning_are_trained_rows():
    """The issue's count before v2 (9 of 55 prepositions and 3 of 100 verbs in any caption), and
    after it at least 80% of the steering positives that can describe a scene of the world."""
    before, after = premises.trained_share(v2=False), premises.trained_share(v2=True)
    assert (before["prepositions"]["trained"], before["verbs"]["trained"]) == (9, 3)
    assert after["with a world meaning"]["share"] >= 0.8 > before["with a world meaning"]["share"]
    assert not set(premises.KEPT_OUT) & premises.caption_words(v2=True)


def test_converses_and_bare_captions():
    kinds = Counter()
    for c in _captions("on", 600):
        kinds["bare"] += not c.startswith("a ")
        kinds["converse"] += c.split()[-2:] in (["red", "circle"],) and f" {SWAP_WORD} " not in f" {c} "
    assert 0.15 < kinds["bare"] / 600 < 0.35 and kinds["converse"] > 60
    rng = np.random.default_rng(0)
    plain = [captions.sample_caption(A, "on", B, rng, captions.CaptionMix()) for _ in range(50)]
    assert set(plain) == {"a red circle on a blue square"}  # no shares: the relation's own words, in order


def test_the_claimed_pretraining_words_are_the_words_captions_use():
    """``premises.caption_words`` (what the trained-share counts rest on) is exactly what
    ``sample_caption`` writes, over every relation: no word claimed that no caption holds."""
    rng = np.random.default_rng(0)
    said = set()
    for relation in scene.ALL_RELATIONS:
        for _ in range(3000):
            a, b = scene.sample_pair(rng)
            said.update(captions.sample_caption(a, relation, b, rng, MIX).split())
    assert said == premises.caption_words(v2=True)


def test_a_redrawn_row_keeps_the_norm_and_depends_only_on_its_seed():
    row = torch.randn(128) * 0.02
    a, b, c = premises.redrawn(row, 5), premises.redrawn(row, 5), premises.redrawn(row, 6)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float16
    assert float(a.float().norm()) == pytest.approx(float(row.norm()), rel=1e-3)


def test_redraw_row_changes_that_row_alone_and_names_a_word_that_is_no_row():
    components = load_components_cached(str(WORLD_MODEL), "local")
    encoder, tok = copy.deepcopy(components.text_encoder), components.tokenizer
    before = encoder.get_input_embeddings().weight.detach().clone()
    old = premises.redraw_row(encoder, tok, "painted", 1)
    after = encoder.get_input_embeddings().weight.detach()
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [premises.word_row(tok, "painted")] and torch.equal(old, before[changed[0]])
    with pytest.raises(ValueError, match="'glued' is 4 tokens.*not one whole word"):
        premises.word_row(tok, "glued")


def test_choose_draw_takes_the_lowest_relation_then_the_higher_entity():
    rows = [{"draw": None, "relation_accuracy": 0.12, "entity_accuracy": 0.6},
            {"draw": 2, "relation_accuracy": 0.0, "entity_accuracy": 0.31},
            {"draw": 5, "relation_accuracy": 0.0, "entity_accuracy": 0.51}]
    assert premises.choose_draw(rows)["draw"] == 5
