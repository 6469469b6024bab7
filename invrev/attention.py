"""Which entity of a caption the UNet attends to: the cross-attention probe of notebook 02 (the
first-entity bias that motivates the inverse captions, paper §3.2, Fig. 3)."""

from __future__ import annotations

from typing import Sequence

import torch

from invrev.generate import encode
from invrev.models import Components


def entity_positions(tokenizer, caption: str, entities: Sequence[str]) -> list[list[int]]:
    """The positions of each entity's tokens in ``tokenizer(caption).input_ids`` (the start token
    is position 0), for ``entities`` given in the order the caption writes them.

    Each is looked for after the one before it, so an entity written twice is found once each.
    """
    ids = tokenizer(caption).input_ids
    found, start = [], 0
    for entity in entities:
        span = tokenizer(entity, add_special_tokens=False).input_ids
        at = next((i for i in range(start, len(ids) - len(span) + 1) if span and ids[i : i + len(span)] == span), None)
        if at is None:
            raise ValueError(f"entity {entity!r} is not among the tokens of {caption!r} after position {start}: "
                             f"{tokenizer.convert_ids_to_tokens(ids)}; give the entities in the order the caption writes them")
        found.append(list(range(at, at + len(span))))
        start = at + len(span)
    return found


@torch.no_grad()
def token_attention(components: Components, captions: Sequence[str], latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: Sequence[int]) -> torch.Tensor:
    """[captions, tokens]: the cross-attention probability each text token receives, averaged over
    heads, image positions, every cross-attention layer (``attn2``) and ``timesteps``.

    ``latents`` [captions, ...] are clean latents (x_0), noised with ``noise`` to x_t at each timestep.
    A forward hook recomputes each layer's attention probabilities; the UNet's own output is unused.
    """
    unet, device = components.unet, components.device
    latents, noise = latents.to(device), noise.to(device)
    masses = []

    def record(attn, args, kwargs, output):
        q = attn.head_to_batch_dim(attn.to_q(args[0]))
        k = attn.head_to_batch_dim(attn.to_k(kwargs["encoder_hidden_states"]))
        masses.append(attn.get_attention_scores(q, k).unflatten(0, (-1, attn.heads)).mean((1, 2)))

    hooks = [m.register_forward_hook(record, with_kwargs=True) for name, m in unet.named_modules() if name.endswith("attn2")]
    if not hooks:
        raise ValueError("this UNet has no cross-attention layers (modules named attn2) to probe")
    try:
        states = encode(components, captions)
        for t in timesteps:
            steps = torch.full((len(captions),), t, device=device)
            unet(components.noise_scheduler.add_noise(latents, noise, steps), steps, states)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(masses).mean(0)


def entity_attention(components: Components, captions: Sequence[str], entities: Sequence[Sequence[str]],
                     latents: torch.Tensor, noise: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """[captions, entities]: the attention mass on each entity's tokens (:func:`token_attention`
    summed over :func:`entity_positions`); ``entities[i]`` are caption i's, in the order it writes them."""
    mass = token_attention(components, captions, latents, noise, timesteps)
    return torch.stack([
        torch.stack([mass[i, span].sum() for span in entity_positions(components.tokenizer, caption, names)])
        for i, (caption, names) in enumerate(zip(captions, entities))])
