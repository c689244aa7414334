"""widen.py: a wider model started from a narrower one codes as the narrower one did."""

import math
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vaecodec import codec, weights
from vaecodec.bitstream import Bitstream
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


def narrow_model(tmp_path, groups=(12,)):
    """A narrow model as its weights file gives it, also written to tmp_path / "narrow.pt":
    every weight random (the GDNs', the context's last layers, which start at zero, and z's
    densities, which start alike, included), its gains large enough that many latents are not
    zero."""
    torch.manual_seed(0)
    model = VAE(8, 12, groups=groups, hyper=(12, 18), lambdas=NARROW_LAMBDAS)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("channel_context", "spatial_context", "fusion", "z_prior")):
                parameter.add_(torch.randn_like(parameter) * 0.1)
            elif name.endswith(("beta", "gamma")):  # GDN: positive; gamma not symmetric
                parameter.mul_(torch.rand_like(parameter) + 0.5)
        model.log_gain.add_(4)
    weights.save_weights(model, tmp_path / "narrow.pt")
    model.load_state_dict(weights.read(tmp_path / "narrow.pt")["state_dict"])  # float16 kernels
    return model


def wide_model(lambdas=WIDE_LAMBDAS):
    """A fresh wide model: N 8 → 24 (the channel context's hidden layer 8 → 12), M 12 → 32."""
    return VAE(24, 32, groups=(4, 8, 20), hyper=(16, 24), lambdas=lambdas)


@pytest.mark.parametrize("narrow_groups", [(12,), (4, 8)])
def test_a_widened_model_codes_as_the_narrow_one_did(tmp_path, narrow_groups):
    narrow = narrow_model(tmp_path, narrow_groups)
    wide = widened(wide_model(), narrow)
    # The narrow groups sit at the start of the last groups: (12,) → group 3, (4, 8) → 2 and 3.
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


def test_a_widened_weights_file_decodes_to_the_same_pixels(tmp_path, photo):
    """Through the codec (exact prior, coding tables): quality 1 is the same λ in both."""
    narrow = narrow_model(tmp_path)
    weights.save_weights(widened(wide_model(), narrow), tmp_path / "wide.pt")
    files = {name: codec.compress(photo, 1, weights_path=tmp_path / f"{name}.pt")
             for name in ("narrow", "wide")}
    pixels = {name: np.asarray(codec.decompress(data, weights_path=tmp_path / f"{name}.pt"))
              for name, data in files.items()}
    np.testing.assert_array_equal(pixels["wide"], pixels["narrow"])
    y_sections = {name: Bitstream.from_bytes(data).y for name, data in files.items()}
    assert len(y_sections["narrow"]) > 100
    assert abs(len(y_sections["wide"]) - len(y_sections["narrow"])) <= 2


def test_widened_gains_follow_the_narrow_ones_between_and_beyond_their_lambdas(tmp_path):
    narrow = narrow_model(tmp_path)
    wide = widened(wide_model(lambdas=(0.001, 0.003, 0.01, 0.1, 0.3)), narrow)
    kept = list(range(12, 24))
    # λ 0.003, between 0.001 and 0.01: where the narrow model puts it, log(3)/log(10) of the way.
    for narrow_position, wide_position, factor in ((math.log(3) / math.log(10), 1, 1),
                                                   (2, 4, math.sqrt(3))):  # 0.3: above 0.1
        gain, inverse_gain = narrow.gains(torch.tensor([float(narrow_position)]))
        wide_gain, wide_inverse_gain = wide.gains(torch.tensor([float(wide_position)]))
        torch.testing.assert_close(wide_gain[:, kept], gain * factor)
        torch.testing.assert_close(wide_inverse_gain[:, kept], inverse_gain / factor)


def test_widen_refuses_a_model_that_does_not_fit(tmp_path):
    narrow = narrow_model(tmp_path)
    for wide, message in (
            (VAE(4, 32, groups=(4, 8, 20), hyper=(16, 24)), "analysis width, 8, exceeds the wide "
             "model's 4 (see --channels)"),
            (VAE(24, 8, groups=(8,), hyper=(16, 24)), "latent channels, 12, exceeds"),
            (VAE(24, 32, groups=(4, 8, 20), hyper=(16, 16)), "hyper-synthesis width 2, 18, "
             "exceeds the wide model's 16 (see --hyper)"),
            (VAE(24, 32, synthesis=(24, 4, 24), groups=(4, 8, 20), hyper=(16, 24)),
             "synthesis width 2, 5, exceeds the wide model's 4 (see --channels, which sets "
             "them to N, 2N/3, N/2)"),
            (VAE(24, 32, groups=(16, 8, 8), hyper=(16, 24)),
             "channel group 1 (12 channels) goes to group 3 of --groups, which has 8")):
        with pytest.raises(ValueError, match=re.escape(message)):
            widened(wide, narrow)
    with pytest.raises(ValueError, match="number of channel groups, 2, exceeds the wide model's 1"):
        widened(VAE(24, 32, groups=(32,), hyper=(16, 24)), narrow_model(tmp_path, (4, 8)))


def test_train_widen_starts_the_asked_model_from_the_init_file(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.save(data / "a.png")
    narrow_model(tmp_path)
    args = ["train", str(data), "--init", str(tmp_path / "narrow.pt"), "--steps", "1",
            "--lr", "1e-12", "--batch-size", "1", "--crop", "64", "--channels", "24",
            "--latents", "32", "--groups", "4,8,20"]
    result = CliRunner().invoke(main, args + ["--hyper", "16,24", "--widen", "--checkpoint",
                                              str(tmp_path / "a.ckpt"), "--export",
                                              str(tmp_path / "wide.pt")])
    assert result.exit_code == 0, result.output
    assert "widened to N=24 M=32 groups 4/8/20" in result.stderr
    config = weights.read(tmp_path / "wide.pt")["config"]
    assert (config["n"], config["m"], config["groups"], config["hyper"]) == (
        24, 32, [4, 8, 20], [16, 24])

    for hyper, message in (
            ("16,16", "error: cannot widen: the init model's hyper-synthesis width 2, 18, exceeds "
                      "the wide model's 16 (see --hyper)\n"),
            ("24", "error: the synthesis has 3 widths and the hyper-synthesis 2, not 3 and 1\n")):
        result = CliRunner().invoke(main, args + ["--hyper", hyper, "--widen", "--checkpoint",
                                                  str(tmp_path / f"{hyper}.ckpt")])
        assert result.exit_code == 1 and result.stderr.endswith(message), result.output
    result = CliRunner().invoke(main, args[:2] + args[4:] + [
        "--checkpoint", str(tmp_path / "b.ckpt"), "--widen"])
    assert result.exit_code == 2 and "--widen needs --init" in result.stderr
