"""The encoder's refinement of the latents (`compress --effort`): a lower rate–distortion cost in
files that the unchanged decoder reads, tile by tile as whole, the same bytes every time."""

import numpy as np
import pytest
import torch
from PIL import Image

import vaecodec
from vaecodec import refine, weights
from vaecodec.bitstream import Bitstream
from vaecodec.cli import main

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


def test_refinement_gives_the_same_bytes_every_time(photo):
    assert vaecodec.compress(photo, QUALITY, effort=1) == vaecodec.compress(photo, QUALITY,
                                                                             effort=1)


def test_annealed_rounding_hardens_into_rounding_around_the_mean():
    """At a low temperature and no noise each element goes to the nearer integer around its
    mean; the rate is that of the same values."""
    torch.manual_seed(0)
    v, mean = torch.randn(1, 6, 5, 5) * 3, torch.randn(1, 6, 5, 5)
    v = torch.where((v - mean).frac().abs().sub(0.5).abs() < 0.05, v + 0.2, v)  # none near .5
    rounding = refine.AnnealedRounding(1e-3, torch.zeros(1, 8, 5, 5))
    decoded = rounding.decoded(v, mean, 2)
    assert torch.allclose(decoded, torch.round(v - mean) + mean, atol=1e-4)
    assert rounding.rated(v, decoded) is decoded


@pytest.mark.parametrize("effort", [-1, 10, 1.5])
def test_an_effort_out_of_range_is_refused(photo, effort):
    with pytest.raises(vaecodec.CodecError, match="effort must be a whole number from 0 to 9"):
        vaecodec.compress(photo, effort=effort)


def test_the_command_refuses_an_effort_out_of_range(tmp_path, photo):
    photo.save(tmp_path / "photo.png")
    result = run("compress", tmp_path / "photo.png", "--effort", "10")
    assert result.exit_code == 2 and "not in the range 0<=x<=9" in result.output
    assert not (tmp_path / "photo.vae").exists()
