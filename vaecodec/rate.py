"""Rate control: the quality that hits a size, a bit rate or a PSNR.

Quality is stored in hundredths (100 … 10000) and the file's size and PSNR grow with it. Once
probes lie on both sides of the target, the next quality is interpolated between the nearest two
(log-rate and PSNR are close to straight lines in quality), falling back to a bisection step
whenever that did not halve the bracket, so a search never needs more than twice bisection's 14
probes and usually needs three or four; it stops once a probe lands well within the promise.
The caller's probe re-uses the image's analysis transform (`codec.analyse`), so a probe costs the
hyper-latent, the prior and the entropy coder (and for a PSNR the synthesis); at an effort above
0 it also refines the latents (refine.py), which then takes most of the time.
"""

import math
from dataclasses import dataclass

from .bitstream import is_number, quality_code
from .errors import CodecError, TargetWarning, note

LOWEST, HIGHEST = quality_code(1), quality_code(100)
EARLY_STOP = 1 / 3  # a probe within this share of the promised tolerance ends the search
# compress's effort: 0 (the analysis transform's latents) … 3 (refine.py). More steps at the same
# settings did not pay on Kodak: 6 images, BD-rate against effort 0 −8.6 % at 3, −7.7 % at 9.
MAX_EFFORT = 3


@dataclass(frozen=True)
class Target:
    """What to aim for. kind: "bpp" (bits per pixel of the whole file) and "psnr" (dB, of the RGB
    or grey decoded) aim at `value`; "bytes" is a budget: at most `value` bytes."""

    kind: str
    value: float

    def __post_init__(self):
        if not is_number(self.value):
            name = {"bpp": "a bpp target", "psnr": "a PSNR target", "bytes": "a byte budget"}
            raise CodecError(f"{name[self.kind]} must be a number, not {self.value!r}")
        if not self.value > 0 or self.value == float("inf"):  # NaN fails too
            raise CodecError(f"{self} must be a positive number")

    def bounds(self, share=1.0):
        """Results that keep the promise: within 3 % of the bit rate, within 0.1 dB of the PSNR,
        or at most the budget and no more than 5 % below it (`share` of those tolerances)."""
        if self.kind == "bpp":
            return self.value * (1 - 0.03 * share), self.value * (1 + 0.03 * share)
        if self.kind == "psnr":
            return self.value - 0.1 * share, self.value + 0.1 * share
        return self.value * (1 - 0.05 * share), self.value

    def miss(self, achieved):
        """How far a result lies outside the promise, over budget first: a sort key."""
        low, high = self.bounds()
        over_budget = self.kind == "bytes" and achieved > self.value
        scale = 1.0 if self.kind == "psnr" else self.value
        return over_budget, max(low - achieved, achieved - high, 0) / scale

    def show(self, value):
        return {"bpp": f"{value:.4f} bpp", "psnr": f"{value:.2f} dB PSNR",
                "bytes": f"{value:.0f} bytes"}[self.kind]

    def __str__(self):
        return ("a budget of " if self.kind == "bytes" else "a target of ") + self.show(self.value)


def _interpolated(below, above, goal, kind):
    """The quality code where the line through the probes `below` and `above` the target
    ((code, result) each) meets `goal`, in log-rate (bpp, bytes) or in dB (PSNR)."""
    scale = (lambda v: v) if kind == "psnr" else math.log
    (code_below, at_below), (code_above, at_above) = below, above
    t = (scale(goal) - scale(at_below)) / (scale(at_above) - scale(at_below))
    return round(code_below + t * (code_above - code_below))


def search(probe, target, strict=False):
    """Search the quality codes for `target`. `probe(quality)` returns (file bytes, the result in
    the target's unit) and must grow with quality. Returns (file bytes, quality). A target that
    cannot be kept gives the nearest file and a TargetWarning, or a CodecError when `strict`."""
    low, high = LOWEST, HIGHEST
    tried = {}
    stop_low, stop_high = target.bounds(EARLY_STOP)
    below = above = None  # the nearest probes under and over the target: (code, result)
    bisect = True
    while low <= high:
        if bisect or below is None or above is None:
            code = (low + high) // 2
        else:
            code = min(max(_interpolated(below, above, (stop_low + stop_high) / 2,
                                         target.kind), low), high)
        width = high - low
        tried[code] = probe(code / 100)
        achieved = tried[code][1]
        if stop_low <= achieved <= stop_high:
            return tried[code][0], code / 100
        if achieved < stop_low:
            low, below = code + 1, (code, achieved)
        else:
            high, above = code - 1, (code, achieved)
        bisect = high - low > width // 2
    if high < LOWEST:  # even quality 1 is above the target
        code, reach = LOWEST, "out of reach"
    elif low > HIGHEST:  # even quality 100 is below it
        code, reach = HIGHEST, "out of reach"
    else:  # the results jump over the target: keep the nearest
        code, reach = min(tried, key=lambda c: target.miss(tried[c][1])), "missed"
    data, achieved = tried[code]
    if target.miss(achieved) != (False, 0):
        message = f"{target} is {reach}: quality {code / 100:g} gives {target.show(achieved)}"
        if strict:
            raise CodecError(message)
        note(f"{message}; kept that file", TargetWarning)
    return data, code / 100
