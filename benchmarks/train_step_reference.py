"""The reference-style step: ReVersion's ``train.py`` step, reproduced for timing only (never used
to train). Used by ``train_step.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from invrev import embeddings, sampling, text, words
from invrev.data import load_exemplars, to_tensor
from invrev.models import Components


class ReferenceStep:
    """One optimizer step as ReVersion's ``train.py`` takes it, on the same components.

    fp32 weights; each micro-batch encodes its exemplars with the VAE (``latent_dist.sample()``),
    draws importance-sampled timesteps with numpy and copies them to the device, runs the text
    encoder and UNet, adds the steer loss, backpropagates into the whole token table, calls AdamW
    (stepping on the last micro-batch, as accelerate's wrapper does), copies every other row back
    from a saved table and logs its losses with ``.item()``. Batch 2 x accumulation 4. Its data
    loader's per-sample image decode, resize and flip are left out, so the speed-ups are lower bounds.
    """

    def __init__(self, components: Components, exemplar_folder: Path, resolution: int, batch: int = 2, accum: int = 4):
        c = self.c = components
        self.batch, self.accum, self.device = batch, accum, components.device
        exemplars = load_exemplars(exemplar_folder)
        self.images, self.templates = to_tensor(exemplars.images, resolution).to(self.device), exemplars.templates
        (self.r_id,) = embeddings.add_placeholders(c.tokenizer, c.text_encoder, ["<r>"])
        self.embed = c.text_encoder.get_input_embeddings()
        self.embed.weight.requires_grad_(True)
        self.original = self.embed.weight.detach().clone()
        self.others = torch.arange(self.original.shape[0], device=self.device) != self.r_id
        self.optimizer = torch.optim.AdamW([self.embed.weight], lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.positives = torch.tensor(_single_tokens(c.tokenizer, "prepositions"), device=self.device)
        stop = (_single_tokens(c.tokenizer, "stopwords") + _single_tokens(c.tokenizer, "prepositions")
                + c.tokenizer.all_special_ids + [self.r_id])
        self.stop = torch.tensor(stop, device=self.device)
        self.probs = sampling.relation_focal_probs(c.noise_scheduler.config.num_train_timesteps).numpy()
        self.rng = np.random.default_rng(2023)

    def step(self) -> None:
        c = self.c
        for micro in range(self.accum):
            idx = self.rng.integers(len(self.templates), size=self.batch)
            captions = [text.fill(self.templates[i][self.rng.integers(len(self.templates[i]))], "<r>") for i in idx]
            input_ids = c.tokenizer(captions, padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length,
                                    return_tensors="pt").input_ids.to(self.device)
            latents = c.codec.vae.encode(self.images[idx]).latent_dist.sample() * c.codec.scale  # frozen: no graph
            noise = torch.randn_like(latents)
            timesteps = torch.tensor(self.rng.choice(len(self.probs), size=self.batch, p=self.probs)).to(self.device).long()
            noisy = c.noise_scheduler.add_noise(latents, noise, timesteps)
            pred = c.unet(noisy, timesteps, c.text_encoder(input_ids)[0]).sample
            denoise = F.mse_loss(pred.float(), noise.float())
            steer = self._steer(input_ids)
            loss = denoise + 0.01 * steer
            (loss / self.accum).backward()
            if micro == self.accum - 1:
                self.optimizer.step()
                self.optimizer.zero_grad()
            with torch.no_grad():
                self.embed.weight[self.others] = self.original[self.others]
            loss.item(), denoise.item(), steer.item()  # ReVersion logs every micro-batch

    def _steer(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ReVersion's ``calculate_steer_loss``: gradient only through the first caption's <r> row."""
        inputs = self.embed(input_ids)
        pick = torch.randint(len(self.positives), (self.batch * 4,), device=self.device)
        positives = self.embed(self.positives[pick])
        with torch.no_grad():
            negatives = inputs[~torch.isin(input_ids, self.stop)]
            block = F.normalize(torch.cat([positives, negatives]), dim=1)
        r = F.normalize(inputs[0][input_ids[0] == self.r_id], dim=1)
        logits = r @ block.T / 0.07
        return (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, : len(positives)], 1)).mean()

    def close(self) -> None:
        self.embed.weight.requires_grad_(False)
        self.embed.weight.grad = None
        del self.optimizer


def _single_tokens(tokenizer, kind: str) -> list[int]:
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in words.load_words(kind)]
    return [i[0] for i in ids if len(i) == 1]
