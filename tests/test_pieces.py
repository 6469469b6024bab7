"""The method's pure pieces against numbers worked out independently (float64 formulas, by hand)."""

import math

import pytest
import torch

from invrev import filters, losses, sampling, text


def _info_nce_float64(r, pos, neg, tau):
    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    p = sum(math.exp(cos(r, x) / tau) for x in pos)
    n = sum(math.exp(cos(r, x) / tau) for x in neg)
    return -math.log(p / (p + n))


def test_steer_loss_by_hand():
    # r along x; one positive along x (cos 1), one negative along y (cos 0): -log(e^{1/t}/(e^{1/t}+1)).
    r = torch.tensor([2.0, 0.0])
    loss = losses.steer_loss(r, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]), temperature=0.5)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)


def test_steer_loss_matches_float64_formula():
    g = torch.Generator().manual_seed(0)
    r, pos, neg = torch.randn(16, generator=g), torch.randn(4, 16, generator=g), torch.randn(7, 16, generator=g)
    expected = _info_nce_float64(r.tolist(), pos.tolist(), neg.tolist(), 0.07)
    assert losses.steer_loss(r, pos, neg, 0.07).item() == pytest.approx(expected, rel=1e-5)


def test_steer_loss_gradient_pulls_r_toward_positives():
    r = torch.tensor([1.0, 1.0], requires_grad=True)
    losses.steer_loss(r, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).backward()
    assert r.grad[0] < 0 < r.grad[1]  # descent increases x, decreases y


def test_pos_weighted_control_loss_is_the_weighted_sum():
    g = torch.Generator().manual_seed(1)
    r, verbs, preps, neg = (torch.randn(*s, generator=g) for s in ((8,), (4, 8), (4, 8), (5, 8)))
    lv = _info_nce_float64(r.tolist(), verbs.tolist(), neg.tolist(), 0.07)
    lp = _info_nce_float64(r.tolist(), preps.tolist(), neg.tolist(), 0.07)
    got = losses.pos_weighted_control_loss(r, verbs, preps, neg, lambda_verb=0.3)
    assert got.item() == pytest.approx(0.3 * lv + 0.7 * lp, rel=1e-5)
    only_preps = losses.pos_weighted_control_loss(r, verbs, preps, neg, lambda_verb=0.0)
    assert only_preps.item() == pytest.approx(losses.steer_loss(r, preps, neg).item(), rel=1e-6)


def test_relation_focal_probs():
    p = sampling.relation_focal_probs(1000, 0.5)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert p[999] / p[0] == pytest.approx(1.5 / 0.5, rel=1e-3)  # ≈3x likelier late than early
    mean = sum(t * (1 - 0.5 * math.cos(math.pi * t / 1000)) for t in range(1000)) / sum(
        1 - 0.5 * math.cos(math.pi * t / 1000) for t in range(1000))
    assert (p * torch.arange(1000)).sum().item() == pytest.approx(mean, rel=1e-9)
    assert mean == pytest.approx(601, abs=1)
    assert torch.allclose(sampling.relation_focal_probs(10, 0.0), torch.full((10,), 0.1, dtype=torch.float64))


def test_sampler_follows_the_distribution_and_the_generator():
    probs = sampling.relation_focal_probs(1000, 0.5)
    draw = lambda: sampling.sample_timesteps(20000, 1000, torch.Generator().manual_seed(3), probs)
    a, b = draw(), draw()
    assert torch.equal(a, b)
    assert a.float().mean().item() == pytest.approx(601, abs=6)
    uniform = sampling.sample_timesteps(20000, 1000, torch.Generator().manual_seed(3))
    assert uniform.float().mean().item() == pytest.approx(499.5, abs=6)


def test_lowpass_constant_image_passes_unchanged():
    x = torch.full((2, 3, 17, 12), 0.37)
    assert torch.allclose(filters.gaussian_lowpass(x, 2.0), x, atol=1e-6)


def test_lowpass_attenuates_checkerboard_and_keeps_shape_and_mean():
    i, j = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((i + j) % 2).float().expand(1, 3, 32, 32) * 2 - 1
    out = filters.gaussian_lowpass(board, 1.0)
    assert out.shape == board.shape
    assert out.abs().max() < 0.05 * board.abs().max()  # the highest frequency is all but removed
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert filters.gaussian_lowpass(x, 1.5).mean().item() == pytest.approx(x.mean().item(), abs=2e-3)


def test_lowpass_matches_dense_2d_convolution_in_float64():
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sigma, k = 1.0, 5
    taps = [math.exp(-0.5 * ((t - 2) / sigma) ** 2) for t in range(k)]
    taps = [t / sum(taps) for t in taps]
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")[0, 0]
    dense = torch.zeros(9, 9, dtype=torch.float64)
    for u in range(9):
        for v in range(9):
            dense[u, v] = sum(taps[a] * taps[b] * padded[u + a, v + b] for a in range(k) for b in range(k))
    assert torch.allclose(filters.gaussian_lowpass(x, sigma, k)[0, 0], dense, atol=1e-12)


def test_lowpass_rejects_bad_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        filters.gaussian_lowpass(torch.zeros(3, 8, 8), 1.0)
    with pytest.raises(ValueError, match="odd"):
        filters.gaussian_lowpass(torch.zeros(1, 3, 8, 8), 1.0, kernel_size=4)


def _waves(n: int, *cycles: int) -> torch.Tensor:
    """[1, 1, n, n] sum of cos(2 pi k x / n) over ``cycles`` k: vertical stripes, k cycles across."""
    x = torch.arange(n, dtype=torch.float64)
    return sum(torch.cos(2 * math.pi * k * x / n) for k in cycles).expand(1, 1, n, n)


def test_radial_power_of_a_sinusoid_peaks_at_its_frequency_by_hand():
    n, k, amplitude = 32, 5, 0.7
    spectrum = filters.power_spectrum(amplitude * _waves(n, k))
    # Parseval: sum |x̂|^2 = n^2 sum x^2 for the mean-removed image
    assert spectrum.sum().item() == pytest.approx(n * n * (amplitude * _waves(n, k)).pow(2).sum().item())
    radius, power = filters.radial_power(spectrum)
    # fft2 puts (A n^2 / 2)^2 at (0, +k) and (0, -k); bin k averages those over its grid points
    half = range(-(n // 2), n - n // 2)
    in_bin = sum(1 for i in half for j in half if round(math.hypot(i, j)) == k)
    assert radius[power.argmax()].item() == k / n
    assert power[k].item() == pytest.approx(2 * (amplitude * n * n / 2) ** 2 / in_bin)
    assert power[torch.arange(len(power)) != k].abs().max() < 1e-6 * power[k]
    assert torch.allclose(filters.power_spectrum(_waves(n, 1, k).expand(2, 3, n, n)), filters.power_spectrum(_waves(n, 1, k)))
    with pytest.raises(ValueError, match="square"):
        filters.radial_power(torch.ones(4, 6))


def test_lowpass_removes_a_high_frequency_pattern_and_keeps_a_low_one():
    n, sigma = 32, 0.8
    taps = filters.gaussian_kernel1d(sigma, dtype=torch.float64)
    offsets = torch.arange(len(taps)) - len(taps) // 2
    kept = {}
    for k in (1, 8):  # f = 1/32 (a shape's outline) and 1/4 (painted_on's brush strokes)
        before, after = (filters.radial_power(filters.power_spectrum(x))[1][k].item()
                         for x in (_waves(n, k), filters.gaussian_lowpass(_waves(n, k), sigma)))
        kept[k] = after / before
        # a cosine through symmetric taps is scaled by their DTFT at its frequency; the reflected
        # borders are not periodic, hence the tolerance
        gain = (taps * torch.cos(2 * math.pi * k / n * offsets)).sum().item()
        assert kept[k] == pytest.approx(gain**2, abs=0.01)
    assert kept[8] < 0.25 and kept[1] > 0.95


def test_inverse_expansion():
    assert text.inverse_caption("a cat {} a rock") == "a rock <inv> <r> a cat"
    assert text.inverse_caption("cat {} stone", "<x>", "<y>") == "stone <y> <x> cat"
    assert text.fill("a cat {} a rock", "<r>") == "a cat <r> a rock"
    for bad in ("a cat a rock", "{} cat {}"):
        with pytest.raises(text.TemplateError, match="exactly one"):
            text.inverse_caption(bad)


def test_sample_captions_mixes_inverse_with_probability():
    templates = [["a cat {} a rock"]] * 2
    caps = text.sample_captions(templates, [0, 1] * 500, torch.Generator().manual_seed(0), p_inverse=0.5)
    share = sum(c.startswith("a rock") for c in caps) / len(caps)
    assert 0.45 < share < 0.55
    none = text.sample_captions(templates, [0] * 50, torch.Generator().manual_seed(0), p_inverse=0.0)
    assert set(none) == {"a cat <r> a rock"}


def test_denoising_target_follows_prediction_type():
    from diffusers import DDPMScheduler

    x, n, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    eps = DDPMScheduler(prediction_type="epsilon")
    assert torch.equal(losses.diffusion_target(eps, x, n, t), n)
    v = DDPMScheduler(prediction_type="v_prediction")
    a = v.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - v.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(losses.diffusion_target(v, x, n, t), a * n - s * x, atol=1e-6)
    assert losses.denoising_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == 1.0


def test_batched_steer_loss_with_mask_equals_the_per_example_loss():
    g = torch.Generator().manual_seed(4)
    r, pos, neg = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((8,), (3, 4, 8), (3, 5, 8)))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    batched = losses.steer_loss(r, pos, neg, 0.07, mask)
    for i in range(3):
        assert batched[i].item() == pytest.approx(losses.steer_loss(r, pos[i], neg[i][mask[i]], 0.07).item(), rel=1e-9)


def test_wilson_interval_by_hand():
    from invrev.measure import wilson

    # 8 of 10 at z = 1.96: centre (0.8 + 0.19208)/1.38416 = 0.71682, half 0.19994
    lo, hi = wilson(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
