"""widen.py: a wider model started from a narrower one codes as the narrower one did."""

import math
import re

import pytest
import torch
from click.testing import CliRunner

from vaecodec import weights
from vaecodec.cli import main
from vaecodec.model import VAE
from vaecodec.widen import widened

NARROW_LAMBDAS = (0.001, 0.01, 0.1)
WIDE_LAMBDAS = NARROW_LAMBDAS + (0.3,)


class Rounded:
    """What the decoders see (ŷ rounded around its mean), its rate measured at ŷ: no noise."""

    @staticmethod
    def decoded(v, mean, first_channel):
        return torch.round(v - mean) + mean

    @staticmethod
    def rated(v, v_hat):
        return v_hat


def coded(model, x, position):
    """(z, ŷ, bits of each element of y, bits of each element of z, reconstruction)."""
    with torch.no_grad():
        gain, inverse_gain = model.gains(torch.tensor([float(position)]))
        y = model.analysis(x) * gain
        z = torch.round(model.hyper_analysis(y))
        y_hat, y_bits = model.quantized(y, model.hyper_synthesis(z), Rounded)
        z_bits = -torch.log2(model.z_prior.likelihood(z))
        return z, y_hat, y_bits, z_bits, model.synthesis(y_hat * inverse_gain)


def narrow_model(tmp_path, groups):
    """A narrow model as a weights file gives it: every weight random (the context's last
    layers, which start at zero, and z's densities, which start alike, included), its gains
    large enough that many latents are not zero."""
    torch.manual_seed(0)
    model = VAE(8, 12, groups=groups, hyper=(12, 18), lambdas=NARROW_LAMBDAS)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("channel_context", "spatial_context", "fusion", "z_prior")):
                parameter.add_(torch.randn_like(parameter) * 0.1)
        model.log_gain.add_(4)
    weights.save_weights(model, tmp_path / "narrow.pt")
    return weights.read(tmp_path / "narrow.pt")


@pytest.mark.parametrize("narrow_groups", [(12,), (4, 8)])
def test_a_widened_model_codes_as_the_narrow_one_did(tmp_path, narrow_groups):
    init = narrow_model(tmp_path, narrow_groups)
    narrow = VAE(**init["config"])
    narrow.load_state_dict(init["state_dict"])
    wide = widened(VAE(16, 32, groups=(4, 8, 20), hyper=(16, 24), lambdas=WIDE_LAMBDAS), init)
    # The narrow latents sit at the start of the last groups: (12,) → group 3, (4, 8) → 2 and 3.
    kept = list(range(12, 24)) if len(narrow_groups) == 1 else [4, 5, 6, 7, *range(12, 20)]
    new = [c for c in range(32) if c not in kept]
    x = torch.rand(1, 3, 128, 128)
    for position in (-1, 0, 1, 2):  # below the narrow λ (extrapolated by both) and each of them
        z, y_hat, y_bits, z_bits, x_hat = coded(narrow, x, position)
        wide_z, wide_y_hat, wide_y_bits, wide_z_bits, wide_x_hat = coded(wide, x, position)
        assert (y_hat != 0).float().mean() > 0.3  # a test with something in it
        torch.testing.assert_close(wide_z[:, :8], z, rtol=0, atol=0)
        torch.testing.assert_close(wide_y_hat[:, kept], y_hat, rtol=0, atol=1e-4)
        torch.testing.assert_close(wide_y_bits[:, kept], y_bits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(wide_z_bits[:, :8], z_bits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(wide_x_hat, x_hat, rtol=0, atol=1e-4)
        # The new latents and hyper-latents are zero and cost (next to) nothing: a new channel
        # of z costs what the narrow model's cheapest zero does.
        assert not wide_z[:, 8:].any() and not wide_y_hat[:, new].any()
        assert wide_y_bits[:, new].max() < 1e-4
        cheapest = -torch.log2(narrow.z_prior.likelihood(torch.zeros(1, 8, 1, 1)).max())
        torch.testing.assert_close(wide_z_bits[:, 8:], cheapest.expand_as(wide_z_bits[:, 8:]))
    # A λ above the narrow ones: the top gains scaled by √(0.3 / 0.1), the inverse by its inverse.
    gain, inverse_gain = narrow.gains(torch.tensor([2.0]))
    wide_gain, wide_inverse_gain = wide.gains(torch.tensor([3.0]))
    torch.testing.assert_close(wide_gain[:, kept], gain * math.sqrt(3))
    torch.testing.assert_close(wide_inverse_gain[:, kept], inverse_gain / math.sqrt(3))


def test_widen_refuses_a_model_that_does_not_fit(tmp_path):
    init = narrow_model(tmp_path, (12,))
    for wide, message in (
            (VAE(4, 32, groups=(4, 8, 20), hyper=(16, 24)), "analysis width 8 exceeds 4"),
            (VAE(16, 32, groups=(4, 8, 20), hyper=(16, 16)), "hyper-synthesis width 18 exceeds 16"),
            (VAE(16, 32, groups=(16, 8, 8), hyper=(16, 24)),
             "channel group 1 (12) exceeds the wide model's (8)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            widened(wide, init)


def test_train_widen_starts_the_asked_model_from_the_init_file(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.save(data / "a.png")
    narrow_model(tmp_path, (12,))
    args = ["train", str(data), "--init", str(tmp_path / "narrow.pt"), "--steps", "1",
            "--lr", "1e-12", "--batch-size", "1", "--crop", "64", "--channels", "16",
            "--latents", "32", "--groups", "4,8,20", "--hyper", "16,24"]
    result = CliRunner().invoke(main, args + ["--checkpoint", str(tmp_path / "a.ckpt"),
                                              "--widen", "--export", str(tmp_path / "wide.pt")])
    assert result.exit_code == 0, result.output
    assert "widened to N=16 M=32" in result.stderr
    config = weights.read(tmp_path / "wide.pt")["config"]
    assert (config["n"], config["m"], config["groups"], config["hyper"]) == (
        16, 32, [4, 8, 20], [16, 24])

    result = CliRunner().invoke(main, args[:2] + args[4:] + [
        "--checkpoint", str(tmp_path / "b.ckpt"), "--widen"])
    assert result.exit_code == 2 and "--widen needs --init" in result.stderr
