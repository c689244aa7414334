"""The encoder's refinement of the latents (`compress --effort`): a lower rate–distortion cost in
files that the unchanged decoder reads, tile by tile as whole, from every entry point."""

import numpy as np
import pytest
import torch
from PIL import Image

import vaecodec
from vaecodec import codec, compute, rate, refine, weights
from vaecodec.bitstream import Bitstream

from conftest import SAMPLE, psnr
from test_cli import run

QUALITY = 60


@pytest.fixture(scope="module")
def larger_photo():
    """256×192 of a real photo: big enough that the file's 4-byte words and header do not hide
    a gain of a few per cent."""
    with Image.open(SAMPLE) as image:
        return image.convert("RGB").crop((0, 0, 256, 192))


def cost(rgb, data):
    """The objective the refinement lowers, measured on the file: bits per pixel + λ·255²·MSE."""
    model = weights.load().model
    decoded = np.asarray(vaecodec.decompress(data), dtype=np.float64)
    mse = np.mean((decoded - rgb) ** 2)
    trade_off = float(model.trade_off(model.position(Bitstream.from_bytes(data).quality)))
    return 8 * len(data) / (rgb.shape[0] * rgb.shape[1]) + trade_off * mse


@pytest.mark.parametrize("tile_pixels", [refine.TILE_PIXELS, 128])
def test_refinement_lowers_the_cost_of_the_decoded_file(larger_photo, tile_pixels, monkeypatch):
    """Two levels of effort cut the cost by several per cent in a smaller file that looks as
    good, tile by tile too (2 × 2 tiles of 128 pixels here, each with its margins)."""
    monkeypatch.setattr(refine, "TILE_PIXELS", tile_pixels)
    rgb = np.asarray(larger_photo, dtype=np.float64)
    plain = vaecodec.compress(larger_photo, QUALITY)
    refined = vaecodec.compress(larger_photo, QUALITY, effort=2)
    assert cost(rgb, refined) < 0.97 * cost(rgb, plain)
    assert len(refined) < 0.98 * len(plain)
    assert psnr(larger_photo, vaecodec.decompress(refined)) > psnr(
        larger_photo, vaecodec.decompress(plain)) - 0.05


def test_each_level_of_effort_lowers_the_cost_further(larger_photo):
    """More steps pay, measured on the file that the decoder reads."""
    rgb = np.asarray(larger_photo, dtype=np.float64)
    costs = [cost(rgb, vaecodec.compress(larger_photo, QUALITY, effort=effort))
             for effort in range(rate.MAX_EFFORT + 1)]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)


def test_the_command_and_pillow_give_the_python_call_s_file(photo, tmp_path):
    """--effort and Pillow's save(effort=…) reach the codec: the same bytes as the Python call
    (same process, so the same threads: the refinement's float steps are seeded)."""
    expected = vaecodec.compress(photo, QUALITY, effort=1)
    assert vaecodec.compress(photo, QUALITY, effort=1) == expected
    photo.save(tmp_path / "photo.png")
    result = run("compress", tmp_path / "photo.png", "-q", QUALITY, "--effort", "1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "photo.vae").read_bytes() == expected
    photo.save(tmp_path / "pillow.vae", quality=QUALITY, effort=1)
    assert (tmp_path / "pillow.vae").read_bytes() == expected


def test_a_target_is_met_with_refined_probes(photo):
    """Each probe of the search is refined, so the target holds for the refined file."""
    plain = psnr(photo, vaecodec.decompress(vaecodec.compress(photo, QUALITY)))
    data = vaecodec.compress(photo, target_psnr=plain, effort=1)
    assert abs(psnr(photo, vaecodec.decompress(data)) - plain) <= 0.1


def test_refine_leaves_its_input_as_it_is(larger_photo, monkeypatch):
    """Every tile starts from the analysis' y, not from a neighbour's refined margin."""
    monkeypatch.setattr(refine, "TILE_PIXELS", 128)
    loaded = weights.load()
    rgb = np.asarray(larger_photo)
    pixels = codec.padded(rgb)
    y, z = codec.at_quality(loaded, codec.analyse(loaded, pixels), QUALITY)
    before = y.clone()
    refined = refine.refine(compute.transforms(loaded.model), y, z, pixels, rgb.shape[1],
                            rgb.shape[0], QUALITY, 1)
    assert torch.equal(y, before) and not torch.equal(refined, before)


def test_annealed_rounding_hardens_into_rounding_around_the_mean():
    """At a low temperature each element goes to the nearer integer around its mean, whatever
    the noise."""
    torch.manual_seed(0)
    v, mean = torch.randn(1, 6, 5, 5) * 3, torch.randn(1, 6, 5, 5)
    v = torch.where((v - mean).frac().abs().sub(0.5).abs() < 0.05, v + 0.2, v)  # none near .5
    rounding = refine.AnnealedRounding(1e-3, torch.randn(1, 8, 5, 5))
    assert torch.allclose(rounding.decoded(v, mean, 2), torch.round(v - mean) + mean, atol=1e-4)


def test_annealed_rounding_reads_the_noise_of_its_own_channels():
    """At a high temperature the noise decides: y's channels 1…6 read channels 1…6 of it."""
    noise = torch.tensor([20.0, -20.0] * 4)[None, :, None, None].expand(1, 8, 3, 3)
    v, mean = torch.full((1, 6, 3, 3), 0.5), torch.zeros(1, 6, 3, 3)
    decoded = refine.AnnealedRounding(1e3, noise).decoded(v, mean, 1)
    up = torch.tensor([0.0, 1.0] * 3)[None, :, None, None].expand_as(v)
    assert torch.allclose(decoded, up, atol=1e-3)


@pytest.mark.parametrize("effort", [-1, 4, 2.0, "3", True])
def test_an_effort_out_of_range_is_refused(photo, effort):
    with pytest.raises(vaecodec.CodecError, match="effort must be an integer from 0 to 3"):
        vaecodec.compress(photo, effort=effort)


def test_the_command_refuses_an_effort_out_of_range(tmp_path, photo):
    photo.save(tmp_path / "photo.png")
    result = run("compress", tmp_path / "photo.png", "--effort", "4")
    assert result.exit_code == 2 and "not in the range 0<=x<=3" in result.output
    assert not (tmp_path / "photo.vae").exists()
