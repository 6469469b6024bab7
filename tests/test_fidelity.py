"""Fidelity to ReVersion's steer loss, checked against the formula written out independently.

ReVersion (train.py, ``calculate_steer_loss``) scores ``<r>`` once per micro-batch against one pooled
set: the positives drawn for all its examples (each example's without replacement) and every token
of all its captions that is not one of its stop words, prepositions, special tokens or the
placeholder. Verbs are negatives there. These tests rebuild that set from the caption text and
ReVersion's word lists, and the loss from Eq. 3, in float64.
"""

from types import SimpleNamespace

import pytest
import torch

from invrev import steering, trainer, words
from invrev.filters import gaussian_lowpass

CAPTIONS = ["a cat <r> a dog", "the red bird <r> a carved stone at the tree"]


def _setup(components, tiny_config, variant, seed=0):
    config = tiny_config(variant=variant, num_positives=4)
    vocab = steering.Vocabulary(components, [config.placeholder, config.inverse_placeholder])
    run_words = vocab.for_config(config)
    table = components.text_encoder.get_input_embeddings().weight.detach().double()
    g = torch.Generator().manual_seed(seed)
    r = torch.nn.Parameter(torch.randn(table.shape[1], generator=g, dtype=torch.float64))
    run = SimpleNamespace(config=config, vectors=r.unsqueeze(0), words=run_words)
    tok = components.tokenizer
    ids = tok(CAPTIONS, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    draw = steering.Picks(steering.choose(len(run_words.preposition_ids), 2, 4, g),
                          steering.choose(len(run_words.verb_ids), 2, 4, g), torch.zeros(2, 3, dtype=torch.long))
    return config, vocab, run, ids, draw, table, r


def _single_token(tok, ws):
    return [w for w in ws if len(tok(w, add_special_tokens=False).input_ids) == 1]


def _eq3(r, positives, negatives, gamma):
    """Eq. 3 in float64: −log Σ_P exp(cos/γ) / Σ_{P∪N} exp(cos/γ), cosines written out."""
    def cos(x):
        return (x @ r) / (x.norm(dim=1) * r.norm())
    pos, neg = cos(positives) / gamma, cos(negatives) / gamma
    return torch.logsumexp(torch.cat([pos, neg]), 0) - torch.logsumexp(pos, 0)


def test_reversion_steer_loss_is_one_pooled_set_per_micro_batch(components, tiny_config):
    config, vocab, run, ids, draw, table, r = _setup(components, tiny_config, "reversion")
    tok = components.tokenizer
    stop, preps = set(words.load_words("reversion_stopwords")), words.load_words("reversion_prepositions")
    excluded = stop | set(preps) | {config.placeholder}
    negative_words = [w for caption in CAPTIONS for w in caption.split() if w not in excluded]
    assert negative_words == ["cat", "dog", "red", "bird", "carved", "stone", "tree"]  # the verb is a negative
    positive_words = [_single_token(tok, preps)[i] for row in draw.prep.tolist() for i in row]
    rows = lambda ws: table[[tok.convert_tokens_to_ids(w + "</w>") for w in ws]]
    expected = _eq3(r.detach(), rows(positive_words), rows(negative_words), config.temperature)
    ours = steering.control_loss(config, r, run.words, ids, draw, table)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12)
    # The per-caption mean this replaced is a different number.
    per_caption = [_eq3(r.detach(), rows(positive_words[4 * k:4 * k + 4]),
                        rows([w for w in CAPTIONS[k].split() if w not in excluded]), config.temperature) for k in range(2)]
    assert abs(torch.stack(per_caption).mean().item() - expected.item()) > 1e-3


def test_inv_reversion_excludes_its_verbs_and_uses_its_own_lists(components, tiny_config):
    config, vocab, run, ids, draw, table, r = _setup(components, tiny_config, "inv_reversion")
    tok = components.tokenizer
    negatives = steering.negative_ids(ids, draw.vocab_neg, config, run.words).tolist()
    assert tok.convert_ids_to_tokens(negatives) == ["cat</w>", "dog</w>", "red</w>", "bird</w>", "stone</w>", "tree</w>"]
    reversion = vocab.for_config(tiny_config(variant="reversion"))
    carved = tok.convert_tokens_to_ids("carved</w>")
    assert carved in run.words.excluded and carved not in reversion.excluded
    at = tok.convert_tokens_to_ids("at</w>")
    assert at in run.words.preposition_ids.tolist()  # 'at' was a negative before it joined the list


def test_positives_are_drawn_without_replacement(components):
    g = torch.Generator().manual_seed(0)
    picks = steering.choose(10, 5000, 4, g)
    assert all(len(set(row)) == 4 for row in picks.tolist())
    counts = torch.bincount(picks.flatten(), minlength=10).double() / picks.numel()
    assert torch.allclose(counts, torch.full((10,), 0.1, dtype=torch.float64), atol=0.01)


def test_vocabulary_negatives_are_other_words(components, tiny_config):
    vocab = steering.Vocabulary(components, ["<r>", "<inv>"])
    listed = set(vocab.verbs).union(*(ids for lists in vocab.lists.values() for ids in lists.values()))
    pool = vocab.vocab_pool.tolist()
    assert pool and not set(pool) & (listed | vocab.special)
    names = components.tokenizer.convert_ids_to_tokens(pool)
    assert all(n.endswith("</w>") and n[:-4].isalpha() and len(n) > 5 for n in names)
    assert {"cat</w>", "stone</w>"} <= set(names)


def test_latent_suppressor_acts_at_latent_scale(tiny_config):
    """At SD 1.5's shapes (512 px images, 64 x 64 latents) the image σ scaled down (2 px -> 0.25
    cells) barely changes x_t; hf_sigma_latent = 1 cell removes the latent's top octave."""
    config = tiny_config(hf_suppress="latent", resolution=512, batch_size=1)
    noisy = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    filtered = trainer._suppress_latent(config, noisy)
    scaled = gaussian_lowpass(noisy, config.hf_sigma * 64 / 512)
    change = lambda x: ((x - noisy).norm() / noisy.norm()).item()
    assert change(scaled) < 0.01 and change(filtered) > 0.5
    assert config.hf_sigma_latent == 1.0


def test_reversion_lists_are_its_own():
    preps, stops = words.steering_lists("reversion").values()
    assert len(preps) == 56 and len(stops) == 127
    assert {"anti", "astride", "following", "including", "regarding", "at"} <= set(preps)
    assert {"s", "t", "don", "now", "during", "until", "further", "yourselves"} <= set(stops)
    ours = set(words.load_words("stopwords")) | set(words.load_words("prepositions"))
    assert set(stops) <= ours  # no ReVersion stop word is a negative of Inv-ReVersion either
