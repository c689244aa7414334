"""Decoding cannot desynchronize: the entropy decoder's tables come from the exact integer prior
(tests/test_prior.py), so only the synthesis transform may differ between precision paths or
devices, and that moves pixels by a level or so, not the whole image."""

import copy

import numpy as np
import torch

from vaecodec import codec, weights


def synthesize(loaded, rgb, quality, dtype, autocast=False):
    _, s, mean, _, _ = codec.latents(loaded, rgb, quality)
    model = copy.deepcopy(loaded.model).to(dtype)
    _, inverse_gain = model.gains(model.position(quality))
    y_hat = (torch.from_numpy(s).double() + mean).to(dtype)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        x_hat = model.synthesis(y_hat * inverse_gain.to(dtype)).float()
    h, w = rgb.shape[:2]
    return x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()


def test_precision_paths_differ_by_at_most_a_level(photo):
    loaded = weights.load()
    rgb = np.asarray(photo)
    decoded = np.asarray(codec.decompress(codec.compress(photo, 60))).astype(np.float64)
    float64 = synthesize(loaded, rgb, 60, torch.float64)
    bfloat16 = synthesize(loaded, rgb, 60, torch.float32, autocast=True)
    assert np.abs(decoded - float64).max() <= 1
    assert np.mean(decoded != float64) < 0.01
    # bf16 keeps 8 bits of mantissa: pixels move a few levels, the picture stays the same.
    assert np.abs(decoded - bfloat16).mean() < 1.5

