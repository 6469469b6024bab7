"""The cross-attention probe: entity tokens found from the tokenizer, attention that is a
distribution over the caption's tokens and does not depend on the other captions of the batch."""

import pytest
import torch

from invrev import attention, embeddings


def test_entity_positions_by_hand(components):
    tok = components.tokenizer
    embeddings.add_placeholders(tok, components.text_encoder, ["<r>", "<inv>"])
    # <|startoftext|> a red cat and a blue dog <|endoftext|>
    assert attention.entity_positions(tok, "a red cat and a blue dog", ["red cat", "blue dog"]) == [[2, 3], [6, 7]]
    assert attention.entity_positions(tok, "a red cat and a red cat", ["red cat", "red cat"]) == [[2, 3], [6, 7]]
    assert attention.entity_positions(tok, "the stone", ["stone"]) == [[2]]
    # the rule notebook 02 used to hard-code for "a c1 s1 ... a c2 s2": tokens 2-3 and the two before the end
    caption = "a blue dog <inv> <r> a red cat"
    n = len(tok(caption).input_ids)
    assert attention.entity_positions(tok, caption, ["blue dog", "red cat"]) == [[2, 3], [n - 3, n - 2]]
    with pytest.raises(ValueError, match="order the caption writes them"):
        attention.entity_positions(tok, "a red cat and a blue dog", ["blue dog", "red cat"])


def test_token_attention_is_a_distribution_per_caption_independent_of_the_batch(components):
    captions = ["a red cat and a blue dog", "a green bird on a stone"]
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mass = attention.token_attention(components, captions, latents, noise, [500, 900])
    assert mass.shape == (2, components.tokenizer.model_max_length)
    assert torch.allclose(mass.sum(1), torch.ones(2), atol=1e-5)
    alone = attention.token_attention(components, captions[1:], latents[1:], noise[1:], [500, 900])
    assert torch.allclose(alone[0], mass[1], atol=1e-6)
    assert not any(m._forward_hooks for name, m in components.unet.named_modules() if name.endswith("attn2"))

    per_entity = attention.entity_attention(components, captions, [["red cat", "blue dog"], ["green bird", "stone"]],
                                            latents, noise, [500, 900])
    expected = torch.stack([mass[0, [2, 3]].sum(), mass[0, [6, 7]].sum(), mass[1, [2, 3]].sum(), mass[1, [6]].sum()])
    assert torch.allclose(per_entity.flatten(), expected)
