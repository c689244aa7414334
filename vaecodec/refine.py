"""The encoder's refinement of y for one image (`compress --effort`): gradient steps on this
image's own rate + λ·distortion through the decoder, which stays as it is, so every decoder reads
the file.

The analysis transform is one network that encodes every photo, so it leaves part of each image's
rate–distortion trade-off unused (the amortization gap: Campos et al. 2019, Yang et al. 2020).
The steps move y, not the network, through the decoder's own arithmetic (the synthesis of
compute.Transforms). They round y after Yang et al.'s stochastic Gumbel annealing: each element
goes to the integer below or above its residual by a relaxed random choice that favours the
nearer one more and more as the temperature falls, so that the rate and distortion being lowered
approach those of the rounded latents the file will hold. Unlike Yang et al. the noise is not
divided by the temperature: their sharper choice did worse in a few dozen steps (kodim05, q50,
30 steps: 0.790 bpp, 29.87 dB against 0.780 bpp, 29.99 dB). z stays as the analysis gives it
(refining it as well gained 0.2 % of rate there).

y is refined tile by tile (TILE_PIXELS square, with tiles.MARGIN latents of context on each side,
whose pixels count in the tile's distortion), so the autograd state stays bounded on large
images. The steps are float arithmetic: the same image and settings give the same file on the
same machine, device and number of threads, and any decoder reads it.
"""

import math

import torch

from .model import Y_CELL, Z_CELL
from .tiles import by_tiles

STEPS_PER_EFFORT = 10
# Adam's, in units of y's quantization step. Falling from 0.1 to 0 along a half cosine lowered the
# R-D cost at each quality more (training photos, 30 steps: -6.6 % against -5.7 %) but not the
# BD-rate, which is what the levels buy (Kodak: +0.8 % PSNR, +3.9 % MS-SSIM).
LEARNING_RATE = 0.01
FIRST_TEMPERATURE = 0.5
TEMPERATURE_FALL = 2.0  # the temperature falls by e^-2 over the steps
# A tile and its margins take about 0.25 GB of autograd state. A multiple of 32 pixels, so that
# every tile starts on an even row and column of y, as the checkerboard's anchors do.
TILE_PIXELS = 512
SEED = 0


class AnnealedRounding:
    """A model.quantized `quantization`: y softly rounded around its mean at `temperature`,
    with one logistic `noise` per element of y (drawn once per step, so that every pass of the
    context sees the same choice); the rate is that of the same softly rounded values."""

    def __init__(self, temperature, noise):
        self.temperature, self.noise = temperature, noise

    def decoded(self, v, mean, first_channel):
        residual = v - mean
        below = residual.detach().floor()
        above = (residual - below).clamp(1e-5, 1 - 1e-5)  # how far above the integer below
        noise = self.noise[:, first_channel:first_channel + v.shape[1]]
        up = torch.sigmoid((torch.atanh(above) - torch.atanh(1 - above)) / self.temperature
                           + noise)
        return mean + below + up

    @staticmethod
    def rated(v, v_hat):
        return v_hat


def refine(transforms, y, z, pixels, width, height, quality, effort):
    """y ([1, M, H, W] after the gain, float32 on the CPU; left as it is) refined by
    10·`effort` steps for the image `pixels` (uint8 [1, 3, 16·H, 16·W], padded beyond `width` ×
    `height`, where the distortion does not count) given its integer hyper-latent z. Runs on
    the transforms' device, the synthesis in their arithmetic."""
    model, device = transforms.model, transforms.device
    inside = torch.zeros(1, 1, *pixels.shape[2:], dtype=torch.bool)
    inside[:, :, :height, :width] = True
    position = model.position(quality)
    trade_off = float(model.trade_off(position)) * 255 ** 2
    inverse_gain = model.gains(position)[1]
    steps = STEPS_PER_EFFORT * effort
    generator = torch.Generator(device).manual_seed(SEED)  # one stream, the tiles in turn
    with torch.no_grad():
        hyper = by_tiles(lambda z: model.hyper_synthesis(z.to(device, torch.float32)).cpu(),
                         torch.from_numpy(z), 1, Z_CELL // Y_CELL, Z_CELL)

    def refined(y, hyper, pixels, inside):
        y, hyper = y.to(device, copy=True).requires_grad_(), hyper.to(device)
        x, weight = pixels.to(device).float().div_(255), inside.to(device).float()
        optimizer = torch.optim.Adam([y], lr=LEARNING_RATE)
        for step in range(steps):
            temperature = FIRST_TEMPERATURE * math.exp(-TEMPERATURE_FALL * step / steps)
            uniform = torch.rand(y.shape, generator=generator, device=device)
            noise = uniform.log() - (-uniform).log1p()
            y_hat, bits = model.quantized(y, hyper, AnnealedRounding(temperature, noise))
            x_hat = transforms.reconstruction(y_hat * inverse_gain)
            squared_error = ((x_hat - x).square() * weight).sum() / 3
            y.grad, = torch.autograd.grad(bits.sum() + trade_off * squared_error, y)
            optimizer.step()
        return y.detach().cpu()

    return by_tiles(refined, (y, hyper, pixels, inside), (1, 1, Y_CELL, Y_CELL), 1, Y_CELL,
                    tile_pixels=TILE_PIXELS)
