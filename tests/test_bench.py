"""Benchmark metrics and a tiny end-to-end bench run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vaecodec.bench import bd_rate, ms_ssim, psnr
from vaecodec.cli import main

RATES = [0.2, 0.4, 0.7, 1.1, 1.6]
QUALITIES = [28.0, 30.5, 33.0, 35.2, 37.0]


def test_psnr_of_known_arrays():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 255, np.uint8)
    assert psnr(a, b) == 0.0
    c = a.copy()
    c[0, 0, 0] = 16  # MSE = 256 / 48
    assert psnr(a, c) == pytest.approx(10 * np.log10(255 ** 2 * 48 / 256))
    assert psnr(a, a) == float("inf")


def test_ms_ssim_is_one_for_identical_and_lower_for_noise():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0)
    assert ms_ssim(a, noisy) < 0.99
    assert ms_ssim(a[:100, :100], a[:100, :100]) is None


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert bd_rate(RATES, QUALITIES, RATES, QUALITIES) == pytest.approx(0, abs=1e-9)


def test_bd_rate_of_half_the_rate_is_minus_fifty_percent():
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, QUALITIES, half, QUALITIES) == pytest.approx(-50)
    assert bd_rate(half, QUALITIES, RATES, QUALITIES) == pytest.approx(100)


def test_bd_rate_needs_overlap():
    assert bd_rate(RATES, QUALITIES, RATES, [q + 20 for q in QUALITIES]) is None


def test_tiny_bench_run(tmp_path, photo):
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "a.png")
    photo.transpose(0).save(images / "b.png")
    result = CliRunner().invoke(main, ["bench", str(images), "-o", str(tmp_path / "out"),
                                       "--codecs", "vaecodec,jpeg", "--qualities",
                                       "10,30,50,70,90", "--max-images", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["raw"]["vaecodec"]) == 5 and len(data["raw"]["jpeg"]) == 8
    assert {r["image"] for r in data["raw"]["jpeg"]} == {"a.png"}
    assert "jpeg" in data["summary"]["bd_rate_psnr"]
    assert (tmp_path / "out" / "rd.png").stat().st_size > 1000
    assert "vaecodec vs jpeg" in (tmp_path / "out" / "results.md").read_text()


def test_unknown_codec_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path), "-o", str(tmp_path / "o"),
                                       "--codecs", "gif"])
    assert result.exit_code == 2 and "unknown codecs gif" in result.output
