"""The prior of y from the hyper-latent z and the decoded context, in exact integer arithmetic:
the same on every machine.

The entropy decoder must pick exactly the tables the encoder picked, or the rest of the file
decodes to noise. Floating-point convolutions do not reproduce across machines (summation order,
BLAS, threads, CPU or GPU: CompressAI #279, Ballé et al. 2019 "Integer networks"). So the
hyper-synthesis and the context networks run in fixed point, wired by the same code as the float
model (model.context_passes) with every network swapped for its exact version:

- weights are rounded to multiples of 2^-WEIGHT_BITS and activations to multiples of
  2^-ACTIVATION_BITS, so every convolution multiplies and adds integers;
- each layer clamps its input so that the sum of the absolute values of all its terms stays
  below 2^52: float64 then computes every convolution exactly, in any order, on a CPU or a GPU,
  and the rounding that follows is exact too. Each convolution is a product of integer matrices
  (its input unfolded), never a library's choice of algorithm: cuDNN's FFT and Winograd ones,
  for one, do not add up the products themselves;
- rescaling by powers of two, rounding and comparing are exact or correctly rounded (IEEE 754);
- no exp or log: the table of each element comes from comparing its raw scale output with
  the integer SCALE_THRESHOLDS, not from computing σ.

The mean μ comes out as a multiple of 2^-ACTIVATION_BITS, and so does every ŷ = s + μ that the
context reads.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import (Y_CELL, Z_CELL, anchors, conditioned, context_passes, decoded, group_bounds,
                    join_groups, refined)
from . import tiles

WEIGHT_BITS = 20
ACTIVATION_BITS = 14
EXACT_LIMIT = 2.0 ** 52  # float64 represents every integer below 2^53; one bit to spare
# Context around a tile where a network reaches less far than tiles.MARGIN (4) cells, which
# would add work for nothing. The hyper-synthesis reaches one cell of z before a tile and two
# after it (its 5×5 transposed convolutions of stride 2 each reach a cell of their input, its
# last 3×3 convolution a cell of y; FORMAT.md fixes them): with tiles of 8 cells of z (512
# pixels), a tile is 2.25 times the work of its interior instead of 4.
HYPER_MARGIN = 2
# The non-anchors' correction (`refine`) reaches two cells of y, through the spatial context's
# 5×5 convolution (the fusion is pointwise): 1.27 times the work of a tile of 32 cells, not 1.56.
REFINE_MARGIN = 2


# The raw scale outputs (in units of 2^-ACTIVATION_BITS) at which the table index steps up:
# where σ = SCALE_MIN + softplus(raw) crosses the geometric mean of two neighbouring
# entropy.SCALES. Written out rather than computed at run time, because exp and log may differ in
# the last bit between math libraries; tests/test_prior.py derives them again.
SCALE_THRESHOLDS = (  # 63 thresholds: table indices 0..63 fit a byte
    -81283, -62129, -52567, -45823, -40431, -35824, -31719, -27954, -24427, -21066, -17819,
    -14648, -11518, -8402, -5274, -2108, 1120, 4435, 7865, 11441, 15196, 19168, 23403, 27951,
    32871, 38233, 44117, 50614, 57830, 65883, 74906, 85051, 96481, 109382, 123956, 140429, 159057,
    180121, 203944, 230885, 261355, 295814, 334786, 378861, 428708, 485081, 548837, 620941,
    702487, 794711, 899011, 1016969, 1150374, 1301247, 1471877, 1664850, 1883092, 2129912,
    2409052, 2724744, 3081776, 3485559, 3942216,
)


class _IntegerConv:
    """One convolution of a prior network, with integer weights and bias."""

    def __init__(self, layer, input_bits, device):
        if layer.dilation != (1, 1) or layer.groups != 1:
            raise TypeError("the prior's convolutions have no dilation and no groups (FORMAT.md)")
        self.layer = layer
        self.input_bits = input_bits
        weight = torch.round(layer.weight.detach().double() * 2.0 ** WEIGHT_BITS)
        bias = torch.round(layer.bias.detach().double() * 2.0 ** (input_bits + WEIGHT_BITS))
        # Largest sum of |weights| over everything one output channel sees (every tap counted,
        # which bounds a transposed convolution's outputs too).
        out_dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
        l1 = weight.abs().sum(dim=tuple(d for d in range(4) if d != out_dim)).max().item()
        self.input_limit = np.floor((EXACT_LIMIT - 1 - bias.abs().max().item()) / max(l1, 1))
        self.bias = bias.to(device)
        # The weights as one matrix: [out, in·k·k] over unfolded inputs, or for a transposed
        # convolution [out·k·k, in], whose products `fold` then adds into place.
        matrix = weight.flatten(1)
        self.matrix = (matrix.T if out_dim else matrix).contiguous().to(device)

    def __call__(self, x):
        """Integer activations with `input_bits` fraction bits → ACTIVATION_BITS fraction bits."""
        total = self.sums(x.clamp(-self.input_limit, self.input_limit))
        shift = 2.0 ** (ACTIVATION_BITS - self.input_bits - WEIGHT_BITS)
        return total.mul_(shift).add_(0.5).floor_()

    def sums(self, x):
        """The convolution's integer sums, as a product of integer matrices (and `fold`, which
        adds a transposed convolution's overlapping products), on any device: no library
        picks the algorithm (see the top of this file). The bias is one more integer term."""
        layer = self.layer
        kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
        height, width = x.shape[2:]
        if isinstance(layer, nn.ConvTranspose2d):
            size = [(n - 1) * s - 2 * p + k + extra for n, s, p, k, extra in zip(
                (height, width), stride, padding, kernel, layer.output_padding)]
            total = F.fold(torch.matmul(self.matrix, x.flatten(2)), size, kernel,
                           padding=padding, stride=stride)
        else:
            size = [(n + 2 * p - k) // s + 1 for n, s, p, k in zip(
                (height, width), stride, padding, kernel)]
            total = torch.matmul(self.matrix, F.unfold(x, kernel, padding=padding, stride=stride))
            total = total.view(len(x), -1, *size)
        return total.add_(self.bias[:, None, None])


def _non_anchors(x):
    """Flat indices of the non-anchors of a tile [1, C, H, W]. Tiles start on even rows and
    columns (checked in _tiled), so a tile's own checkerboard is the image's."""
    return torch.nonzero(~anchors(*x.shape[2:], x.device).flatten()).squeeze(1)


def _at(where, values, height, width):
    """Values [C, n] of the non-anchors `where` → [1, C, H, W], zero at the anchors."""
    total = values.new_zeros(1, len(values), height * width)
    total[0, :, where] = values
    return total.view(1, -1, height, width)


class _NonAnchorConv(_IntegerConv):
    """The exact spatial context where its output is read: at the non-anchors. Its input is zero
    there, so a non-anchor's sum has terms only from the taps at odd offsets (12 of a 5×5
    kernel): the same sums for about a quarter of the multiplies."""

    def __init__(self, layer, input_bits, device):
        k = layer.kernel_size[0]
        if (layer.kernel_size != (k, k) or layer.stride != (1, 1) or layer.dilation != (1, 1)
                or layer.padding != (k // 2, k // 2) or layer.groups != 1 or k % 2 == 0):
            raise TypeError("the spatial context must be an odd square 'same' convolution")
        if k // 2 > REFINE_MARGIN:
            raise TypeError(f"a {k}×{k} spatial context reaches past REFINE_MARGIN")
        super().__init__(layer, input_bits, device)
        self.tap_rows, self.tap_cols = torch.tensor(
            [(i, j) for i in range(k) for j in range(k) if (i + j) % 2], device=device).T
        # Only those taps' columns of the matrix: [out, C·taps], channel-major like the columns
        # below
        weight = self.matrix.view(len(self.matrix), -1, k, k)
        self.matrix = weight[:, :, self.tap_rows, self.tap_cols].flatten(1)

    def sums(self, x):
        height, width = x.shape[2:]
        pad = self.layer.padding[0]
        where = _non_anchors(x)
        padded = F.pad(x, (pad,) * 4)[0].flatten(1)
        # Where each tap of each non-anchor reads the padded grid: [taps, non-anchors]
        index = ((where // width + self.tap_rows[:, None]) * (width + 2 * pad)
                 + where % width + self.tap_cols[:, None])
        columns = padded[:, index].flatten(0, 1)
        return _at(where, torch.addmm(self.bias[:, None], self.matrix, columns), height, width)


def _pointwise_at_non_anchors(module, device):
    """The exact version of a stack of 1×1 convolutions (the fusion) evaluated at the
    non-anchors alone, where its output is read (zero at the anchors)."""
    if any(layer.kernel_size != (1, 1) or layer.padding != (0, 0)
           for layer in module if isinstance(layer, nn.Conv2d)):
        raise TypeError("the fusion must be 1×1 convolutions")
    network = _integer_network(module, ACTIVATION_BITS, device)

    def run(x):
        where = _non_anchors(x)
        out = network(x.flatten(2)[:, :, where, None])
        return _at(where, out[0, :, :, 0], *x.shape[2:])

    return run


def _integer_network(module, input_bits, device):
    """The exact version of a convolution or a stack of convolutions and LeakyReLUs, taking
    integers with `input_bits` fraction bits and giving integers with ACTIVATION_BITS fraction
    bits, with its weights on `device`."""
    steps = []
    for layer in module if isinstance(module, nn.Sequential) else [module]:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            steps.append(_IntegerConv(layer, input_bits, device))
            input_bits = ACTIVATION_BITS
        elif isinstance(layer, nn.LeakyReLU):
            slope = layer.negative_slope
            steps.append(lambda x, slope=slope: torch.where(x < 0, torch.floor(x * slope + 0.5), x))
        else:
            raise TypeError(f"no exact version of {type(layer).__name__}")

    def network(x):
        for step in steps:
            x = step(x)
        return x

    return network


def _tiled(network, margin, by_size=False):
    """`network` over y's grid (a tuple of sources), tile by tile with `margin` cells of context
    (bounded memory; the same result), into `out` when given (see tiles.by_tiles); `by_size`:
    in tiles.tile_side's tiles rather than the transforms'."""
    def run(x, out=None):
        height, width = x[0].shape[2:]
        side = tiles.tile_side(height * Y_CELL, width * Y_CELL) if by_size else tiles.TILE_PIXELS
        if (side // Y_CELL) % 2 or margin % 2:
            raise ValueError("tiles of y must start on even rows and columns (the checkerboard)")
        return tiles.by_tiles(network, x, 1, 1, Y_CELL, out, tile_pixels=side, margin=margin)

    return run


class _ExactNetworks:
    """The model's prior networks, each swapped for its exact version, under the same names, so
    that model.context_passes runs unchanged over them."""

    def __init__(self, model, device):
        # These run inside the tiles of `condition` and `refine`.
        self.channel_context = [_integer_network(net, ACTIVATION_BITS, device)
                                for net in model.channel_context]
        self.spatial_context = [_NonAnchorConv(net, ACTIVATION_BITS, device)
                                for net in model.spatial_context]
        self.fusion = [_pointwise_at_non_anchors(net, device) for net in model.fusion]

    def hyperprior(self, hyper, k):
        """Group k's prior: its block of the exact hyperprior (ExactPrior.hyper), handed over:
        the passes correct it in place, and it is freed once the group is coded."""
        block, hyper[k] = hyper[k], None
        return block

    # Both corrections tile by tile, written over `params`: their intermediates stay the size of
    # a tile, and no second prior of the group is held (hundreds of MB on a 24 MP image). Both
    # are pointwise in `params`, so each tile reads it only where it writes. The non-anchors'
    # correction holds the most per cell at the largest image's peak, so it takes smaller tiles
    # there (tiles.tile_side).

    def condition(self, k, params, earlier):
        """model.conditioned, tile by tile in place."""
        return _tiled(lambda *pair: conditioned(self, k, *pair), tiles.MARGIN)(
            (params, earlier), out=params)

    def refine(self, k, params, anchor_hat):
        """model.refined, tile by tile in place."""
        return _tiled(lambda *pair: refined(self, k, *pair), REFINE_MARGIN, by_size=True)(
            (params, anchor_hat), out=params)


def _group_major(model):
    """The hyper-synthesis with its output channels in the order the passes read them: each
    channel group's means, then its raw scales (the model gives all means, then all raw scales).
    The same integers: each output channel is its own sum, and the input's clamp is set by the
    largest over all of them whatever their order."""
    order = [channel for first, end in group_bounds(model.groups)
             for channel in (*range(first, end), *range(model.m + first, model.m + end))]
    network = copy.deepcopy(model.hyper_synthesis)
    last = network[-1]
    if type(last) is not nn.Conv2d:
        raise TypeError("the hyper-synthesis must end in a convolution (FORMAT.md)")
    last.weight, last.bias = (nn.Parameter(p.detach()[order]) for p in (last.weight, last.bias))
    return network


class ExactPrior:
    """The mean μ and the table index of every element of y: `hyper` from the integer
    hyper-latent z, then `passes` through the context, group by group. Both work on integers in
    units of 2^-ACTIVATION_BITS, on `device` (the same integers on any)."""

    def __init__(self, model, device=torch.device("cpu")):
        self.groups = model.groups
        self.device = device
        self._hyper = _integer_network(_group_major(model), 0, device)
        self._networks = _ExactNetworks(model, device)
        self.thresholds = torch.tensor(SCALE_THRESHOLDS, dtype=torch.float64, device=device)

    def hyper(self, z):
        """z: integer array [1, N, h, w] → the hyperprior of each channel group, [1, 2M_k, 4h, 4w]:
        the mean and raw scale of each element of its channels. One tensor per group, so that
        the passes free each once its group is coded."""
        z = torch.from_numpy(np.asarray(z, dtype=np.float64)).to(self.device)
        sizes = [2 * size for size in self.groups]
        with torch.no_grad():
            side = tiles.tile_side(z.shape[2] * Z_CELL, z.shape[3] * Z_CELL)
            return list(tiles.by_tiles(lambda tile: self._hyper(tile).split(sizes, dim=1), z, 1,
                                       Z_CELL // Y_CELL, Z_CELL, tile_pixels=side,
                                       margin=HYPER_MARGIN))

    def passes(self, hyper, decide, keep=False):
        """model.context_passes in exact arithmetic: `decide(k, params, anchors_only)` gets
        group k's prior in units and returns its ŷ (float64 multiples of 2^-ACTIVATION_BITS, on
        any device). Returns (ŷ of every group on `device`, the priors if `keep`, else None).
        To hold less at once, the passes work in place: they take the blocks of `hyper` out of
        its list and overwrite them, and each ŷ that `decide` returns, which must be a new
        tensor."""
        def decide_in_units(k, params, anchors_only):
            y_hat = decide(k, params, anchors_only).to(self.device)
            return y_hat.mul_(2.0 ** ACTIVATION_BITS)

        with torch.no_grad():
            y_hat, priors = context_passes(self._networks, self.groups, hyper, decide_in_units,
                                           keep)
        return [block.mul_(2.0 ** -ACTIVATION_BITS) for block in y_hat], priors  # exact

    def prior(self, hyper, y_hat):
        """The prior of every element given all of ŷ (its teacher-forced value, for checks)."""
        teacher = decoded(y_hat, self.groups)
        return join_groups(self.passes([block.clone() for block in hyper],
                                       lambda *pass_: teacher(*pass_).clone(), keep=True)[1])

    def split(self, params):
        """Prior output → (μ: float64 tensor [1, C, H, W] on the CPU, table index: uint8 array,
        same shape)."""
        mean, raw = params.chunk(2, dim=1)
        table = torch.searchsorted(self.thresholds, raw.contiguous(), right=True, out_int32=True)
        return (mean * 2.0 ** -ACTIVATION_BITS).cpu(), table.to(torch.uint8).cpu().numpy()
