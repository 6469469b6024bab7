import pytest

from invrev import words
from invrev.words import KINDS, clip_tokenizer_from_bpe, find_clip_bpe, load_words, single_token_words


def test_lists_are_clean():
    for kind in KINDS:
        ws = load_words(kind)
        assert len(ws) >= 40, kind
        assert len(set(ws)) == len(ws), f"{kind} has duplicates"
        assert all(w == w.lower() and w.isalpha() for w in ws), kind
    assert 50 <= len(load_words("prepositions")) <= 60


def test_lists_are_disjoint():
    preps, verbs, stops = (set(load_words(k)) for k in KINDS)
    assert not preps & verbs
    assert not stops & preps
    assert not stops & verbs


def test_lists_hold_the_words_the_benchmark_needs():
    assert {"on", "in", "inside", "from", "by", "behind", "beside"} <= set(load_words("prepositions"))
    assert {"carved", "painted", "wrapped", "hanging", "riding", "holding", "hugging", "shaking"} <= set(
        load_words("verbs")
    )
    assert {"a", "an", "the", "and", "is"} <= set(load_words("stopwords"))


def test_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match="prepositions, verbs, stopwords"):
        load_words("nouns")


def test_find_clip_bpe_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("INVREV_CLIP_BPE", str(tmp_path / "absent.txt.gz"))
    assert find_clip_bpe() is None
    present = tmp_path / "bpe.txt.gz"
    present.write_bytes(b"")
    monkeypatch.setenv("INVREV_CLIP_BPE", str(present))
    assert find_clip_bpe() == present


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    path = find_clip_bpe()
    if path is None:
        pytest.skip(
            f"real CLIP vocabulary not found at {words.clip_bpe_candidate()}: set INVREV_CLIP_BPE to "
            "bpe_simple_vocab_16e6.txt.gz (from `pip download --no-deps open_clip_torch`)"
        )
    return clip_tokenizer_from_bpe(path, tmp_path_factory.mktemp("clip-tokenizer"))


def test_real_clip_tokenizer(clip_tokenizer):
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer.model_max_length == 77
    assert clip_tokenizer.pad_token == clip_tokenizer.unk_token == "<|endoftext|>"


def test_single_token_words_finds_multi_token_words(clip_tokenizer):
    assert single_token_words(clip_tokenizer, ["on", "astride", "cat", "squeezing"]) == ["astride", "squeezing"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_listed_word_is_one_clip_token(clip_tokenizer, kind):
    assert single_token_words(clip_tokenizer, load_words(kind)) == []


def test_reversion_lists_on_the_real_vocabulary(clip_tokenizer):
    """ReVersion's own lists: only "astride" is two CLIP tokens (left out at load; ReVersion would use both pieces)."""
    assert single_token_words(clip_tokenizer, load_words("reversion_prepositions")) == ["astride"]
    assert single_token_words(clip_tokenizer, load_words("reversion_stopwords")) == []
