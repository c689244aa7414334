"""Where the big transforms run and in what arithmetic: CPU or CUDA, fp32 or bf16.

The analysis and synthesis take most of a CPU encode or decode. On a CPU that does bf16 natively
(AVX512-BF16 or AMX) their inner layers run in bf16, about twice as fast; the first and last
layer of each stay fp32, since bf16 keeps 8 bits of mantissa and those layers read or write what
must be exact to better than that: pixels (a level is 1/255) and the latents that are rounded to
integers. That keeps pixels close to exact arithmetic: on Kodak a bf16 decode has 12 % of its
values a level off and 0.015 % two, an fp32 one 0.002 % a level (benchmarks/results/precision.md).
On CUDA the transforms are a few milliseconds of a decode, so `auto` keeps them in fp32 there,
TF32 off, within a level of exact like an fp32 CPU decode (coding_bf16). The hyper-analysis is
small and stays on the CPU in fp32.

The prior that selects the coding tables is not here: it runs on the same device in exact integer
arithmetic (prior.py), so a file decodes to the same latents whatever device or arithmetic made it
or reads it; only the pixels may differ, by a level or two.
"""

import copy
import itertools
from functools import lru_cache

import torch
import torch.nn.functional as F

from .errors import CodecError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


def bf16_is_native(device):
    """Whether bf16 convolutions run natively here (CUDA, or a CPU with AVX512-BF16 or AMX),
    which makes them about twice as fast; elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return True
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_device(name="auto"):
    """'auto' (CUDA when available), 'cpu' or 'cuda' → a torch.device."""
    if name not in DEVICES:
        raise CodecError(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise CodecError("no CUDA device available (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def use_bf16(precision, device):
    """Whether to run in bf16 for a precision of 'auto', 'bf16' or 'fp32' (training: `auto` is
    bf16 wherever it is native)."""
    if precision not in PRECISIONS:
        raise CodecError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and bf16_is_native(device))


def coding_bf16(precision, device):
    """`use_bf16` for compressing and decoding: `auto` is fp32 on CUDA (see above)."""
    return use_bf16("fp32" if precision == "auto" and device.type == "cuda" else precision,
                    device)


def _without_tf32():
    """cuDNN's other settings as they are, but convolutions in full fp32 (TF32 keeps 10 bits)."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=False)


class Transforms:
    """The analysis and synthesis of a model on one device, in one arithmetic.
    Tiles come in and go out on the CPU (the caller stitches them there, in bounded memory)."""

    def __init__(self, model, device, bf16):
        if device.type != "cpu":
            model = copy.deepcopy(model).to(device)
        self.model, self.device, self.bf16 = model, device, bf16
        self.synthesis_layers = [*model.synthesis[:-1], SubPixel(model.synthesis[-1])]

    def _layers(self, layers, x, cast=False):
        """Run a stack of layers; the inner ones in bf16 when asked, fp32 in full fp32 (cuDNN
        would otherwise round CUDA convolutions' inputs to TF32's 10 bits). Autocast casts only
        the convolutions' inputs, so the first GDN's elementwise work stays fp32, unless `cast`
        hands the inner layers bf16: the analysis does, since there that work on the largest
        tensor took half the time and y moves too little to matter (≤ 0.004 dB at equal rate,
        benchmarks/results/precision.md); the synthesis does not, as it keeps pixels within a
        level of exact arithmetic that way."""
        with _without_tf32():
            x = layers[0](x)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                x = x.to(torch.bfloat16) if cast and self.bf16 else x
                for layer in layers[1:-1]:
                    x = layer(x)
            return layers[-1](x.float())

    def analysis(self, pixels):
        """uint8 pixels [1, 3, H, W] → the analysis output (before the gain), fp32 on the CPU."""
        x = pixels.to(self.device).float().div_(255)
        return self._layers(self.model.analysis, x, cast=True).cpu()

    def synthesis(self, y_hat, inverse_gain):
        """ŷ (float64, on any device) → uint8 pixels [1, 3, 16·H, 16·W] on the CPU."""
        y_hat = y_hat.to(self.device, torch.float32) * inverse_gain.to(self.device)
        return self.reconstruction(y_hat).mul_(255).round_().to(torch.uint8).cpu()

    def reconstruction(self, scaled_y_hat):
        """The synthesis of ŷ · inverse gain (float32 on the device) → pixels in [0, 1] before
        they are rounded, on the device; differentiable, so that the encoder's refinement
        (refine.py) steers y through the decoder's own arithmetic."""
        return self._layers(self.synthesis_layers, scaled_y_hat).clamp(0, 1)


class SubPixel:
    """A transposed convolution of stride s as an ordinary convolution to the s² phases of each
    output channel, interleaved by pixel_shuffle (Shi et al. 2016): the same sums in another
    order. oneDNN's transposed convolutions are slow in fp32, so the synthesis' last layer runs
    this way (35 → 15 ms for a Kodak image on 2 cores)."""

    def __init__(self, deconv):
        (s, _), (p, _), (k, _) = deconv.stride, deconv.padding, deconv.kernel_size
        square = all(len(set(v)) == 1 for v in (deconv.stride, deconv.padding,
                                                 deconv.kernel_size, deconv.output_padding))
        if (not square or deconv.dilation != (1, 1) or deconv.groups != 1
                or k - 2 * p + deconv.output_padding[0] != s):
            raise ValueError(f"{deconv} does not scale its input by exactly its stride")
        # Output s·q + r sums input q - d through tap s·d + r + p: d within ±reach.
        reach = max((k - 1 - p) // s, (s - 1 + p) // s)
        taps = 2 * reach + 1
        w = deconv.weight.detach()
        weight = w.new_zeros(w.shape[1], s, s, w.shape[0], taps, taps)
        for ry, rx, ty, tx in itertools.product(range(s), range(s), range(taps), range(taps)):
            ky, kx = s * (reach - ty) + ry + p, s * (reach - tx) + rx + p
            if 0 <= ky < k and 0 <= kx < k:
                weight[:, ry, rx, :, ty, tx] = w[:, :, ky, kx].T
        self.weight = weight.flatten(0, 2)
        self.bias = None if deconv.bias is None else deconv.bias.detach().repeat_interleave(s * s)
        self.stride, self.padding = s, reach

    def __call__(self, x):
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, padding=self.padding),
                               self.stride)


@lru_cache(maxsize=8)
def transforms(model, device="auto", precision="auto"):
    """The Transforms of a loaded model (one copy per device, kept for the process)."""
    device = pick_device(device)
    return Transforms(model, device, coding_bf16(precision, device))
