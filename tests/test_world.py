"""The relation world: vocabulary, renders, captions, grid tools and the scorer's agreement with
the renderer (on a seed the scorer was never tuned on), also under blur and noise."""

import numpy as np
import pytest

from invrev.world import captions, grid, render, scene, scorer, scorer_check
from invrev.world.scene import ALL_RELATIONS, BACKGROUND, COLOURS, Entity
from invrev.world_model import release

RED_CIRCLE, BLUE_SQUARE = Entity("red", "circle"), Entity("blue", "square")
ASYMMETRIC = [name for name, info in ALL_RELATIONS.items() if not info.symmetric]


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding, in float."""
    r = int(np.ceil(3 * sigma))
    taps = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    out = image.astype(float)
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in range(3)], mode="edge")
        out = sum(w * np.take(padded, range(k, k + image.shape[axis]), axis=axis) for k, w in enumerate(taps))
    return out


def degrade(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.5, std: float = 8.0) -> np.ndarray:
    noisy = blur(image, sigma) + rng.normal(0, std, image.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def checked():
    """check_scorer on a seed no threshold was tuned on (tuning used seeds 0-3)."""
    return {row.relation: row for row in scorer_check.check_scorer(12345, 50)}


def test_vocabulary():
    assert len(scene.ENTITIES) == 24 and len(set(scene.ENTITIES)) == 24
    assert len(scene.RELATIONS) == 10 and len(scene.EXTRA_RELATIONS) == 5
    named = {name for name, info in scene.RELATIONS.items() if info.named}
    assert named == {"on", "inside", "hanging_from", "ride_on", "carved_by"}
    assert all(info.named for info in scene.EXTRA_RELATIONS.values())
    assert len({info.words for info in ALL_RELATIONS.values()}) == 15
    for info in ALL_RELATIONS.values():
        assert 0 <= info.lambda_verb <= 1
        assert (info.lambda_verb < 0.5) == (info.kind == "spatial")
    assert [name for name, info in ALL_RELATIONS.items() if info.symmetric] == ["next_to"]


def test_sample_pair_never_repeats_a_colour():
    rng = np.random.default_rng(0)
    pairs = [scene.sample_pair(rng) for _ in range(300)]
    assert all(a.colour != b.colour for a, b in pairs)
    assert len({a for a, _ in pairs}) == 24


@pytest.mark.parametrize("relation", ALL_RELATIONS)
def test_render_fits_the_canvas(relation):
    rng = np.random.default_rng(1)
    for _ in range(10):
        a, b = scene.sample_pair(rng)
        image = render.render(a, relation, b, rng)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (border == BACKGROUND).all(), "an entity or mark touches the edge"
        assert (image != BACKGROUND).any(axis=-1).sum() > 100


def test_render_scales_to_other_sizes():
    rng = np.random.default_rng(8)
    for relation in ALL_RELATIONS:
        a, b = scene.sample_pair(rng)
        image = render.render(a, relation, b, rng, size=64)
        assert image.shape == (64, 64, 3)
        assert scorer.score(image, a, relation, b).agrees, relation


def test_render_is_a_function_of_the_generator():
    first = render.render(RED_CIRCLE, "hug", BLUE_SQUARE, np.random.default_rng(3))
    again = render.render(RED_CIRCLE, "hug", BLUE_SQUARE, np.random.default_rng(3))
    assert np.array_equal(first, again)
    with pytest.raises(ValueError):
        render.render(RED_CIRCLE, "on", Entity("red", "square"), np.random.default_rng(0))
    with pytest.raises(ValueError):
        render.render(RED_CIRCLE, "beside", BLUE_SQUARE, np.random.default_rng(0))


def test_the_renderer_still_draws_the_shipped_benchmark(tmp_path):
    """The committed exemplars come out of the renderer again, pixel for pixel (a speed-up must not move
    one). Known exception: back2back's six were written by an earlier draft of its layout and differ in
    4-8 of 1,024 pixels; they stay, since every run of the batch trained on them (data/world/manifest.json
    pins their sha256)."""
    from PIL import Image

    from invrev.models import REPO_ROOT
    from invrev.world import benchmark

    fresh = release.write_benchmark(tmp_path / "benchmark", seed=0)
    shipped = sorted((REPO_ROOT / "data" / "world" / "benchmark").glob("*/*.png"))
    assert len(shipped) == len(scene.RELATIONS) * benchmark.EXEMPLARS_PER_RELATION
    for png in shipped:
        moved = (np.asarray(Image.open(png)) != np.asarray(Image.open(fresh / png.parent.name / png.name))).any(axis=-1).sum()
        assert moved <= (8 if png.parent.name == "back2back" else 0), (png, moved)


def test_render_keeps_palette_colours_pure():
    """Anti-aliasing only at edges: most entity pixels are exactly a palette colour."""
    image = render.render(RED_CIRCLE, "left_of", BLUE_SQUARE, np.random.default_rng(0))
    pixels = [tuple(p) for p in image.reshape(-1, 3)]
    assert pixels.count(COLOURS["red"]) >= 40 and pixels.count(COLOURS["blue"]) >= 50


@pytest.mark.parametrize("relation", ASYMMETRIC)
def test_swapping_entities_changes_the_scene_and_the_verdict(relation):
    for seed in range(4):
        a, b = scene.sample_pair(np.random.default_rng(seed))
        image = render.render(a, relation, b, np.random.default_rng(seed))
        swapped = render.render(b, relation, a, np.random.default_rng(seed))
        assert not np.array_equal(image, swapped)
        assert scorer.score(image, a, relation, b).agrees
        assert not scorer.score(image, b, relation, a).agrees


@pytest.mark.parametrize("relation", ASYMMETRIC)
def test_the_direction_check_finds_a_relation_drawn_the_wrong_way_round(relation):
    from invrev.measure import score

    for seed in range(4):
        a, b = scene.sample_pair(np.random.default_rng(seed))
        assert not score(render.render(a, relation, b, np.random.default_rng(seed)), relation, a, b).reversed
        assert score(render.render(b, relation, a, np.random.default_rng(seed)), relation, a, b).reversed


def test_a_symmetric_relation_is_never_drawn_reversed():
    from invrev.measure import score

    assert not score(render.render(RED_CIRCLE, "next_to", BLUE_SQUARE, np.random.default_rng(0)), "next_to", BLUE_SQUARE, RED_CIRCLE).reversed


@pytest.mark.parametrize("relation", ALL_RELATIONS)
def test_scorer_agrees_with_the_renderer(checked, relation):
    row = checked[relation]
    assert row.n == 50 and row.passed and row.agreement >= 0.98


@pytest.mark.parametrize("relation", ALL_RELATIONS)
def test_wrong_captions_fail(checked, relation):
    row = checked[relation]
    assert row.mismatched <= 0.04
    assert row.swapped is None if relation == "next_to" else row.swapped <= 0.02


def test_format_table(checked):
    table = scorer_check.format_table(list(checked.values()))
    assert len(table.splitlines()) == 16 and "next_to" in table and "NO" not in table


def test_scorer_survives_mild_blur_and_noise():
    """Gaussian blur sigma 0.5 px plus noise std 8: measured 0.99-1.0 on tuning seeds, worst
    relation 0.95; the bars leave room for sampling error at 20 scenes a relation."""
    rng = np.random.default_rng(777)
    rates = {}
    for relation in ALL_RELATIONS:
        hits = 0
        for _ in range(20):
            a, b = scene.sample_pair(rng)
            hits += scorer.score(degrade(render.render(a, relation, b, rng), rng), a, relation, b).agrees
        rates[relation] = hits / 20
    assert np.mean(list(rates.values())) >= 0.95, rates
    assert min(rates.values()) >= 0.85, rates


def test_entities_must_match_in_colour_and_shape():
    image = render.render(RED_CIRCLE, "above", BLUE_SQUARE, np.random.default_rng(2))
    assert scorer.score(image, RED_CIRCLE, "above", BLUE_SQUARE).agrees
    assert not scorer.score(image, Entity("red", "square"), "above", BLUE_SQUARE).entity_a
    assert not scorer.score(image, Entity("green", "circle"), "above", BLUE_SQUARE).entity_a
    assert not scorer.score(image, RED_CIRCLE, "above", Entity("blue", "cross")).entity_b


def test_every_shape_is_recognised_at_every_size():
    rng = np.random.default_rng(4)
    for shape in scene.SHAPES:
        for size in (8, 11, 16, 22, 28):
            x, y = rng.uniform(1, 31 - size, 2)
            mask = render.shape_mask(shape, (x, y, x + size, y + size), (32, 32))
            image = BACKGROUND + render.coverage(mask)[..., None] * np.subtract(COLOURS["green"], BACKGROUND)
            score = scorer.score(image.round().astype(np.uint8), Entity("green", shape), "above", BLUE_SQUARE)
            assert score.shape_a == shape, (shape, size)


def test_blank_and_fused_images():
    blank = np.full((32, 32, 3), BACKGROUND, np.uint8)
    nothing = scorer.score(blank, RED_CIRCLE, "on", BLUE_SQUARE)
    assert not (nothing.entity or nothing.relation or nothing.fusion)

    image = render.render(RED_CIRCLE, "left_of", BLUE_SQUARE, np.random.default_rng(5))
    assert not scorer.score(image, RED_CIRCLE, "left_of", BLUE_SQUARE).fusion
    one_colour = image.copy()
    one_colour[(image == COLOURS["blue"]).all(-1)] = COLOURS["red"]  # B drawn in A's colour
    assert scorer.score(one_colour, RED_CIRCLE, "left_of", BLUE_SQUARE).fusion
    # Each shape in the other's colour.
    assert scorer.score(image, Entity("red", "square"), "left_of", Entity("blue", "circle")).fusion


def test_carved_by_is_a_shape_made_of_the_other_colour():
    rng = np.random.default_rng(6)
    image = render.render(RED_CIRCLE, "carved_by", BLUE_SQUARE, rng)
    colours = {tuple(p) for p in image.reshape(-1, 3)}
    assert COLOURS["red"] not in colours and COLOURS["blue"] in colours
    score = scorer.score(image, RED_CIRCLE, "carved_by", BLUE_SQUARE)
    assert score.agrees and not score.fusion and score.shape_a == "circle"
    assert not scorer.score(image, Entity("red", "triangle"), "carved_by", BLUE_SQUARE).entity
    assert not scorer.score(image, RED_CIRCLE, "inside", BLUE_SQUARE).relation


def test_classify_reads_colours_along_the_background_line():
    red, bg = np.array(COLOURS["red"]), np.array(BACKGROUND)
    seam = (np.array(COLOURS["yellow"]) + COLOURS["purple"]) / 2
    pixels = np.array([[bg, red, 0.6 * red + 0.4 * bg, 0.3 * red + 0.7 * bg, seam,
                        [255, 255, 255], 0.45 * np.array(COLOURS["orange"]) + 0.55 * bg]]).round()
    red_class = 2 + list(COLOURS).index("red")  # palette classes follow BACK and WHITE_MARK
    expected = [scorer.BACK, red_class, red_class, scorer.UNKNOWN, scorer.UNKNOWN, scorer.WHITE_MARK]
    classes = scorer.classify(pixels)[0]
    assert classes[:6].tolist() == expected
    assert classes[6] != red_class  # a faint orange edge is not a strong red


def test_grid_tools():
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    assert grid.fill_holes(ring)[3, 3] and grid.fill_holes(ring).sum() == 25
    open_ring = ring.copy()
    open_ring[3, 5] = False
    assert not grid.fill_holes(open_ring)[3, 3]
    diagonal = np.eye(4, dtype=bool)
    assert grid.label(diagonal)[1] == 1 and grid.label(diagonal, diagonal=False)[1] == 4
    body = np.zeros((8, 12), bool)
    body[2:6, 1:5] = True
    body[3, 5:10] = True  # a 1 px bar
    assert grid.drop_thin_rows(body).sum() == 16
    split = body.copy()
    split[:, 2:4] = False  # a 2 px gap
    assert grid.label(grid.close(split))[1] == 1


def test_captions():
    template = captions.template(RED_CIRCLE, BLUE_SQUARE)
    assert template == "a red circle {} a blue square" and template.count("{}") == 1
    assert captions.caption(RED_CIRCLE, "on", BLUE_SQUARE) == "a red circle on a blue square"
    for relation, info in ALL_RELATIONS.items():
        text = captions.caption(RED_CIRCLE, relation, BLUE_SQUARE)
        assert text == template.format(info.words) == captions.relation_text(RED_CIRCLE, relation, BLUE_SQUARE)
        assert text == text.lower() and " an " not in text
    assert captions.caption(RED_CIRCLE, "hug", BLUE_SQUARE, vague=True) == "a red circle and a blue square"
    rng = np.random.default_rng(0)
    orders = {captions.caption(RED_CIRCLE, "hug", BLUE_SQUARE, rng, vague=True) for _ in range(20)}
    assert orders == {"a red circle and a blue square", "a blue square and a red circle"}
    assert captions.caption(RED_CIRCLE, "on", BLUE_SQUARE, paraphrase=True) == "a blue square under a red circle"
    paraphrase = captions.caption(RED_CIRCLE, "left_of", BLUE_SQUARE, paraphrase=True)
    assert paraphrase == "a blue square right of a red circle"
    with pytest.raises(ValueError):
        captions.caption(RED_CIRCLE, "hug", BLUE_SQUARE, paraphrase=True)


@pytest.mark.parametrize("relation", list(ALL_RELATIONS))
def test_broken_renders_fail_entity_accuracy(checked, relation):
    """An entity removed or recoloured, or the colours swapped (different shapes): <= 1% pass.
    carved_by: B's colour erased to the background (its grooves left), recoloured, or the object
    drawn in A's colour."""
    row = checked[relation]
    assert row.removed <= 0.01 and row.recoloured <= 0.01 and row.colours_swapped <= 0.01
    assert "removed" in scorer_check.format_table([row])


def test_left_of_and_next_to_renders_are_not_shake_hands(checked):
    assert checked["shake_hands"].lookalike == 0.0


def test_shake_hands_accepts_a_blended_junction():
    """The model draws the two hands meeting in a blended pixel; the rule must not reject that."""
    rng = np.random.default_rng(4)
    blended = 0
    for _ in range(10):
        a, b = scene.sample_pair(rng)
        image = render.render(a, "shake_hands", b, rng).astype(float)
        classes = scorer.classify(image)
        colour_a, colour_b = 2 + list(COLOURS).index(a.colour), 2 + list(COLOURS).index(b.colour)
        for y in np.flatnonzero(((classes == colour_a)[:, :-1] & (classes == colour_b)[:, 1:]).any(1)):
            x = np.flatnonzero((classes[y, :-1] == colour_a) & (classes[y, 1:] == colour_b))[0]
            image[y, x:x + 2] = (np.array(COLOURS[a.colour]) + np.array(COLOURS[b.colour])) / 2
            blended += 1
        assert scorer.score(image.round().astype(np.uint8), a, "shake_hands", b).agrees
    assert blended >= 10  # every render had a junction to blend


@pytest.mark.parametrize("relation", scorer.CONTAINERS)
def test_a_container_must_be_drawn_in_its_own_colour(relation):
    """The false positive that was: with B's colour absent, B's body was A's, and a same-shape
    pair passed entity accuracy."""
    rng = np.random.default_rng(3)
    a, b = Entity("red", "circle"), Entity("blue", "circle")
    for _ in range(10):
        layers = render.layout(a, relation, b, rng)
        assert scorer.score(render.paint(layers), a, relation, b).entity
        gone = render.paint([(m, c) for m, c in layers if c != COLOURS["blue"]])
        green = render.paint([(m, COLOURS["green"] if c == COLOURS["blue"] else c) for m, c in layers])
        assert not scorer.score(gone, a, relation, b).entity
        assert not scorer.score(green, a, relation, b).entity


def test_contained_entities_keep_their_shape_size():
    """inside and wrapped_in draw A at least ``render.INNER`` px wide where it fits (it did not
    keep its shape in the model's samples at 8 px)."""
    rng = np.random.default_rng(5)
    for relation in ("inside", "wrapped_in"):
        widths = []
        for _ in range(20):
            a, b = scene.sample_pair(rng)
            if b.shape != "square":
                continue
            image = render.render(a, relation, b, rng)
            cols = np.flatnonzero((scorer.classify(image) == 2 + list(COLOURS).index(a.colour)).any(0))
            widths.append(cols[-1] - cols[0] + 1)
        assert min(widths) >= render.INNER - 1


def test_handles_are_unnamed_relations_words_of_no_list():
    from invrev.words import load_words

    listed = set().union(*(load_words(k) for k in ("prepositions", "verbs", "stopwords")))
    words = {w for info in ALL_RELATIONS.values() for w in info.words.split()}
    for name, info in ALL_RELATIONS.items():
        assert (info.handle is None) == info.named, name
        if info.handle:
            assert info.handle not in listed and info.handle not in words
            assert captions.caption(RED_CIRCLE, name, BLUE_SQUARE, handle=True) == f"a red circle {info.handle} a blue square"
    with pytest.raises(ValueError, match="no handle"):
        captions.caption(RED_CIRCLE, "on", BLUE_SQUARE, handle=True)
