"""Rate control: the search on a synthetic probe (every edge case, instantly), then the real
targets on a Kodak crop."""

import warnings

import numpy as np
import pytest
from PIL import Image

import vaecodec
from vaecodec import rate
from vaecodec.bitstream import Bitstream
from vaecodec.errors import TargetWarning

from conftest import SAMPLE, psnr


def probe_of(curve):
    """A probe whose result is curve(quality) and whose 'file' is the quality it was made at."""
    calls = []

    def probe(quality):
        calls.append(quality)
        return quality, curve(quality)

    return probe, calls


def exponential(quality):
    return 0.1 * 1.03 ** quality  # 0.13 … 1.92, like bpp


@pytest.mark.parametrize("kind,value", [("bpp", 0.5), ("psnr", 0.5), ("bytes", 0.5)])
def test_search_lands_within_the_promise_in_few_probes(kind, value):
    probe, calls = probe_of(exponential)
    _, quality = rate.search(probe, rate.Target(kind, value))
    low, high = rate.Target(kind, value).bounds()
    assert low <= exponential(quality) <= high
    # Two bisection steps bracket the target; the interpolation between them lands (bisection
    # alone takes 7 here).
    assert len(calls) == 3 and all(1 <= q <= 100 for q in calls)


@pytest.mark.parametrize("budget", [450, 480])
def test_budget_is_never_exceeded_when_it_can_be_kept(budget):
    """Even where the file over it is nearer (500 bytes against a budget of 480)."""
    def steps(quality):  # big jumps: nothing lands within 5 % under the budget
        return 100.0 * (1 + quality // 10)

    probe, _ = probe_of(steps)
    with pytest.warns(TargetWarning, match="missed"):
        _, quality = rate.search(probe, rate.Target("bytes", budget))
    assert steps(quality) == 400


def test_a_search_that_interpolates_badly_falls_back_to_bisection():
    """A curve flat up to quality 50, then steep: interpolating alone creeps towards the target
    (thousands of probes); with a bisection step whenever the bracket did not halve, at most
    twice bisection's 14."""
    probe, calls = probe_of(lambda quality: 20 + 1000 * max(0.0, quality - 50))
    rate.search(probe, rate.Target("psnr", 20.05))
    assert len(calls) <= 28


def test_the_promised_tolerances():
    assert rate.Target("bpp", 1.0).bounds() == pytest.approx((0.97, 1.03))
    assert rate.Target("psnr", 30).bounds() == pytest.approx((29.9, 30.1))
    assert rate.Target("bytes", 1000).bounds() == pytest.approx((950, 1000))
    probe, _ = probe_of(lambda quality: 0.96 if quality < 50 else 1.04)  # 4 % either side
    with pytest.warns(TargetWarning, match="a target of 1.0000 bpp is missed"):
        rate.search(probe, rate.Target("bpp", 1.0))


def test_a_jump_just_above_quality_1_is_missed_not_out_of_reach():
    """Quality 1 falls below the target and everything above it over: the target lies between
    two qualities, not below quality 1, and the file kept is one of the nearer ones."""
    probe, _ = probe_of(lambda quality: 0.9 if quality == 1 else 1.1)
    with pytest.warns(TargetWarning, match="is missed: quality .* gives 1.1000 bpp"):
        _, quality = rate.search(probe, rate.Target("bpp", 1.05))
    assert quality > 1


@pytest.mark.parametrize("value,quality,message", [
    (0.01, 1, "out of reach: quality 1 gives 0.1030 bpp"),
    (5.0, 100, "out of reach: quality 100 gives 1.9219 bpp"),
])
def test_out_of_reach_gives_the_nearest_file_and_says_so(value, quality, message):
    probe, _ = probe_of(exponential)
    with pytest.warns(TargetWarning, match=message):
        assert rate.search(probe, rate.Target("bpp", value)) == (quality, quality)
    with pytest.raises(vaecodec.CodecError, match=message):
        rate.search(probe, rate.Target("bpp", value), strict=True)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_nonsense_targets_are_refused(value):
    with pytest.raises(vaecodec.CodecError, match="must be a positive number"):
        rate.Target("bpp", value)


@pytest.mark.parametrize("given, message", [
    ({"quality": True}, "quality must be a number"), ({"quality": "50"}, "quality must be"),
    ({"target_bpp": "0.5"}, "a bpp target must be a number"),
    ({"max_bytes": True}, "a byte budget must be a number"),
])
def test_what_is_not_a_number_is_refused(given, message):
    """True is not quality 1, nor "50" quality 50: both are refused like other nonsense."""
    with pytest.raises(vaecodec.CodecError, match=message):
        vaecodec.compress(np.zeros((8, 8, 3), np.uint8), **given)


@pytest.fixture(scope="module")
def kodak():
    """A quarter of the Kodak crop (192×128): small enough for a quick search."""
    with Image.open(SAMPLE) as image:
        return image.convert("RGB").crop((96, 64, 288, 192))


def test_target_bpp_on_a_kodak_image(kodak):
    data = vaecodec.compress(kodak, target_bpp=0.6)
    assert 8 * len(data) / (kodak.width * kodak.height) == pytest.approx(0.6, rel=0.03)


def test_max_bytes_on_a_kodak_image(kodak):
    data = vaecodec.compress(kodak, max_bytes=2000)
    assert 1900 <= len(data) <= 2000


@pytest.mark.parametrize("mode", ["RGB", "L", "LA"])
def test_target_psnr_holds_for_the_image_decoded(photo, mode):
    """For a grey image, the grey that comes back: its RGB reconstruction, which the search
    measured before, is 0.2-0.8 dB worse than the grey it averages to."""
    image = photo.crop((64, 32, 128, 96)).convert(mode)
    decoded = vaecodec.decompress(vaecodec.compress(image, target_psnr=31))
    colours = mode.removesuffix("A")
    assert decoded.mode == mode
    assert psnr(image.convert(colours), decoded.convert(colours)) == pytest.approx(31, abs=0.1)


def test_unreachable_target_keeps_the_smallest_file(photo):
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        data = vaecodec.compress(photo.crop((0, 0, 32, 32)), max_bytes=50)
    assert Bitstream.from_bytes(data).quality == 1
    assert [str(n.message) for n in notes if n.category is TargetWarning] == [
        f"a budget of 50 bytes is out of reach: quality 1 gives {len(data)} bytes; kept that file"]


def test_one_target_at_a_time(photo):
    with pytest.raises(vaecodec.CodecError, match="at most one of"):
        vaecodec.compress(photo, quality=50, target_bpp=1)
    with pytest.raises(vaecodec.CodecError, match="at most one of"):
        vaecodec.compress(np.zeros((8, 8), np.uint8), target_psnr=30, max_bytes=1000)
