"""The compression VAE: analysis → latent y, hyperprior z → per-element Gaussian (mean, scale)
for y, synthesis → pixels (Ballé et al. 2018, Minnen et al. 2018, mean-scale hyperprior).

One model serves every quality through gain units (Cui et al. 2021): a per-channel gain on y
for each training λ, interpolated in log space for the qualities in between.
"""

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

# Rate–distortion trade-offs trained into the gain units of a new model, from low to high
# quality: CompressAI's eight and one above them, so that quality 100 reaches high fidelity.
# (vaecodec ≤ 0.4 models have the first seven; a model's own list is in its weights file.)
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.18, 0.32)
SCALE_MIN = 0.11  # smallest Gaussian scale the prior predicts (and the coder's table starts at)
# One element of y covers 16×16 image pixels and one element of z 64×64 (images are padded to a
# multiple of 64: bitstream.STRIDE).
Y_CELL, Z_CELL = 16, 64


# Quality 1 sits two steps below the lowest trained λ: there the log-gains are extrapolated, which
# takes the rate down to about 0.1 bpp on Kodak; quality 100 is the highest trained λ.
LOWEST_POSITION = -2.0


def quality_position(quality, levels):
    """Map quality 1..100 linearly onto a position in a model's `levels` λ (LOWEST_POSITION ..
    levels - 1)."""
    t = (min(max(float(quality), 1.0), 100.0) - 1.0) / 99.0
    return LOWEST_POSITION + t * (levels - 1 - LOWEST_POSITION)


def default_groups(m):
    """Channel groups in ELIC's proportions (16, 16, 32, 64, 192 of 320): small groups first, so
    that most channels are coded with the most context."""
    sizes = [m // 20, m // 20, m // 10, m // 5]
    return tuple(size for size in sizes + [m - sum(sizes)] if size)


def gain_spread(lambdas):
    """log(√(λ / middle λ)) for every λ: the initial log-gains."""
    lambdas = torch.tensor(lambdas)
    return 0.5 * torch.log(lambdas / lambdas[len(lambdas) // 2])


def _conv(cin, cout, kernel=5, stride=2):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _deconv(cin, cout, kernel=5, stride=2):
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              output_padding=stride - 1)


class GDN(nn.Module):
    """Simplified generalized divisive normalization (Johnston et al. 2019):
    x / (β + γ|x|), or x · (β + γ|x|) when inverse. Cheaper than the square-root form and as good."""

    def __init__(self, channels, inverse=False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        gamma = torch.full((channels, channels), 1e-4) + 0.1 * torch.eye(channels)
        self.gamma = nn.Parameter(gamma)

    def forward(self, x):
        # A matrix product rather than a 1×1 convolution: oneDNN's 1×1 convolution rounds
        # differently with 1 or 2 threads, the product does not, so decoded pixels are the same.
        gamma, beta = self.gamma.abs().to(x.dtype), self.beta.abs().to(x.dtype) + 1e-6
        # The product laid out like x ([pixels, C] when x is channels-last): the division of x by
        # a norm in the other layout takes several times longer than the product itself.
        if x.is_contiguous(memory_format=torch.channels_last):
            norm = F.linear(x.abs().permute(0, 2, 3, 1), gamma, beta).permute(0, 3, 1, 2)
        else:
            norm = torch.matmul(gamma, x.abs().flatten(2)).view_as(x) + beta[:, None, None]
        return x * norm if self.inverse else x / norm


class FactorizedPrior(nn.Module):
    """Learned non-parametric density of z, one per channel (Ballé et al. 2018, appendix 6.1).
    It models a cumulative distribution with a small monotonic network."""

    FILTERS = (1, 3, 3, 3, 1)

    def __init__(self, channels, init_scale=10.0):
        super().__init__()
        scale = init_scale ** (1 / (len(self.FILTERS) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i, (fin, fout) in enumerate(zip(self.FILTERS[:-1], self.FILTERS[1:])):
            init = math.log(math.expm1(1 / scale / fout))
            self.matrices.append(nn.Parameter(torch.full((channels, fout, fin), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, fout, 1) - 0.5))
            if i < len(self.FILTERS) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, fout, 1)))

    def _logits_cdf(self, v):
        """v: [C, 1, n] → logits of the CDF at v, same shape."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(matrix), v) + bias
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def likelihood(self, z):
        """Probability mass of the unit-width bin around each element of z: [B, C, H, W]."""
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail that keeps precision
        mass = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return mass.reshape(c, b, h, w).permute(1, 0, 2, 3)

    def cdf(self, points):
        """CDF of every channel at the given points (1-D) → [C, len(points)] in float64."""
        c = self.matrices[0].shape[0]
        v = points.to(torch.float64).reshape(1, 1, -1).expand(c, 1, -1)
        with torch.no_grad():
            return torch.sigmoid(copy.deepcopy(self).double()._logits_cdf(v)).reshape(c, -1)


def gaussian_likelihood(residual, scale):
    """Mass of the unit-width bin around `residual` under N(0, scale²)."""
    v = residual.abs()
    return torch.special.ndtr((0.5 - v) / scale) - torch.special.ndtr((-0.5 - v) / scale)


def mean_scale(params):
    """Split the prior's output into the mean and the (positive) scale of y."""
    mean, raw = params.chunk(2, dim=1)
    return mean, SCALE_MIN + F.softplus(raw)


def rounded(v, mean=0.0):
    """round(v − mean) + mean in the forward pass, the identity in the backward pass
    (straight-through): what the decoder sees, with a gradient for the encoder."""
    return v + (torch.round(v - mean) + mean - v).detach()


def anchors(height, width, device=None):
    """The first half of y's checkerboard: the elements whose row + column is even ([H, W] bool).
    They are coded with the hyperprior and the earlier channel groups; the other half also sees
    the decoded anchors of its own group."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (rows + cols) % 2 == 0


def group_bounds(groups):
    """(first, end) channel of every channel group."""
    ends = list(itertools.accumulate(groups))
    return list(zip([0] + ends[:-1], ends))


def context_passes(nets, groups, hyper, decide, keep=True):
    """The space-channel context (He et al. 2022, "ELIC"): y's channels are split into `groups`,
    coded one after the other, each in two checkerboard passes. The one wiring shared by
    training, the rate estimate and the exact coder (prior.py runs it over integer networks).

    Group k's prior starts from the hyperprior's mean and raw scale of its channels
    (`nets.hyperprior` of `hyper`), corrected by `channel_context[k-1]` from the decoded groups
    before it (`nets.condition`): final for its anchors. Its non-anchors add `fusion[k]` of that
    and of `spatial_context[k]` over the group's decoded anchors (`nets.refine`). The exact
    networks compute both corrections tile by tile, over the prior in place.
    `decide(k, params, anchors_only)` returns ŷ of group k from its prior [B, 2M_k, H, W] (only
    the anchors count when `anchors_only`). Returns ŷ of every group (its second pass's) and
    every group's prior, [mean, raw scale] per group, or None for those unless `keep` (the
    coder reads each in `decide`: holding them all would double what a large image's prior
    takes)."""
    decoded, priors = [], []
    for k in range(len(groups)):
        params = nets.hyperprior(hyper, k)
        if k:
            params = nets.condition(k, params, torch.cat(decoded, dim=1))
        params = nets.refine(k, params, decide(k, params, True))
        decoded.append(decide(k, params, False))
        if keep:
            priors.append(params)
    return decoded, (priors if keep else None)


def conditioned(nets, k, params, earlier):
    """Group k's prior [B, 2M_k, H, W] corrected by `channel_context[k-1]` of the decoded groups
    before it (`earlier`). Pointwise in `params`, which the exact networks overwrite tile by
    tile."""
    return params + nets.channel_context[k - 1](earlier)


def refined(nets, k, params, anchor_hat):
    """Group k's prior [B, 2M_k, H, W] with its non-anchors corrected by `fusion[k]` of it and of
    `spatial_context[k]` over the group's decoded anchors (`anchor_hat`, read only at the
    anchors); the anchors keep theirs. The anchors are picked out here, and the correction is
    zeroed at the anchors and added rather than selected, so that the exact networks, which
    run this tile by tile, make no full-size temporary (a 24 MP image's prior takes hundreds of
    MB per tensor)."""
    mask = anchors(*params.shape[2:], params.device)
    context = nets.spatial_context[k](torch.where(mask, anchor_hat, 0))
    correction = nets.fusion[k](torch.cat([params, context], dim=1))
    return params + correction.masked_fill_(mask, 0)


def decoded(y_hat, groups):
    """A `decide` for context_passes that gives latents already decoded: the prior of every
    element given all of ŷ (for the rate estimate and checks)."""
    slices = [y_hat[:, first:end] for first, end in group_bounds(groups)]
    return lambda k, params, anchors_only: slices[k]


def join_groups(priors):
    """Per-group priors [mean_k, raw_k] → [all means, all raw scales], y's channel order."""
    means, raws = zip(*(params.chunk(2, dim=1) for params in priors))
    return torch.cat(means + raws, dim=1)


def interpolated_rows(table, position):
    """`table`'s rows ([levels, C]) interpolated linearly at each position ([B] floats) → [B, C];
    positions below 0 extrapolate from the first two rows. How a model's log-gains (and log λ)
    run between its trained λ."""
    position = position.to(table.device, torch.float32)
    low = position.floor().long().clamp(0, len(table) - 1)
    high = (low + 1).clamp(max=len(table) - 1)
    t = (position - low)[:, None]
    return table[low] * (1 - t) + table[high] * t


def _log_interpolated(table, position):
    """exp of `interpolated_rows`."""
    return torch.exp(interpolated_rows(table, position))


class VAE(nn.Module):
    """Mean-scale hyperprior VAE with a space-channel context and gain units. N: width of the
    analysis and hyper transforms, M: latent channels, `synthesis`: the synthesis' widths from
    the latents up, `groups`: channel groups of the context (one group: the checkerboard context
    alone), `hyper`: hidden widths of the hyper-synthesis, `lambdas`: the trade-offs of the gain
    units.

    The defaults narrow the synthesis towards full resolution (N, 2N/3, N/2), where a layer costs
    the most, and keep the hyper-synthesis at N: with N=192, M=320 a Kodak image then decodes in
    less than twice the time of vaecodec 0.4's model (N=96, M=160)."""

    def __init__(self, n=192, m=320, synthesis=None, groups=None, hyper=None, lambdas=LAMBDAS):
        super().__init__()
        self.n, self.m = n, m
        self.synthesis_widths = tuple(synthesis or (n, 2 * n // 3, n // 2))
        self.groups = tuple(groups or default_groups(m))
        self.hyper = tuple(hyper or (n, n))
        self.lambdas = tuple(lambdas)
        if sum(self.groups) != m or min(self.groups) < 1:
            raise ValueError(f"channel groups {self.groups} do not split {m} latent channels")
        if len(self.synthesis_widths) != 3 or len(self.hyper) != 2:
            raise ValueError(f"the synthesis has 3 widths and the hyper-synthesis 2, not "
                             f"{len(self.synthesis_widths)} and {len(self.hyper)}")
        self.analysis = nn.Sequential(
            _conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m))
        s1, s2, s3 = self.synthesis_widths
        self.synthesis = nn.Sequential(
            _deconv(m, s1), GDN(s1, inverse=True), _deconv(s1, s2), GDN(s2, inverse=True),
            _deconv(s2, s3), GDN(s3, inverse=True), _deconv(s3, 3))
        self.hyper_analysis = nn.Sequential(
            _conv(m, n, 3, 1), nn.LeakyReLU(), _conv(n, n), nn.LeakyReLU(), _conv(n, n))
        h1, h2 = self.hyper
        self.hyper_synthesis = nn.Sequential(
            _deconv(n, h1), nn.LeakyReLU(), _deconv(h1, h2), nn.LeakyReLU(), _conv(h2, m * 2, 3, 1))
        # The context (see context_passes). Every correction's last layer starts at zero, so
        # weights trained with less context carry over.
        width = max(n // 2, 8)
        self.channel_context = nn.ModuleList(
            nn.Sequential(_conv(first, width, 3, 1), nn.LeakyReLU(), _conv(width, width, 3, 1),
                          nn.LeakyReLU(), _conv(width, 2 * size, 3, 1))
            for (first, _), size in zip(group_bounds(self.groups)[1:], self.groups[1:]))
        self.spatial_context = nn.ModuleList(_conv(size, size, 5, 1) for size in self.groups)
        self.fusion = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * size, 2 * size, 1), nn.LeakyReLU(),
                          nn.Conv2d(2 * size, 2 * size, 1)) for size in self.groups)
        for correction in (*self.channel_context, *self.fusion):
            nn.init.zeros_(correction[-1].weight)
            nn.init.zeros_(correction[-1].bias)
        self.z_prior = FactorizedPrior(n)
        # Gains start spaced as rate–distortion theory suggests (quantization step ∝ 1/√λ), so
        # every λ gets its own rate from the first step instead of all collapsing to one.
        spread = gain_spread(self.lambdas)[:, None].repeat(1, m)
        self.log_gain = nn.Parameter(spread)
        self.log_inverse_gain = nn.Parameter(-spread)

    def config(self):
        """What the weights file records to rebuild this model."""
        return {"n": self.n, "m": self.m, "synthesis": list(self.synthesis_widths),
                "groups": list(self.groups), "hyper": list(self.hyper),
                "lambdas": list(self.lambdas)}

    def position(self, quality):
        """Quality 1..100 → a position in this model's λ, as `gains` takes it ([1])."""
        return torch.tensor([quality_position(quality, len(self.lambdas))])

    def gains(self, position):
        """Gain and inverse gain for each position into the λ (tensor [B] of floats) → [B, M, 1, 1]
        each; fractional positions interpolate in log space, negative ones extrapolate from the
        first two."""
        return (_log_interpolated(self.log_gain, position)[:, :, None, None],
                _log_interpolated(self.log_inverse_gain, position)[:, :, None, None])

    def trade_off(self, position):
        """λ at each position ([B]), interpolated like the gains: what the encoder's refinement
        weighs distortion with at a quality between the trained ones."""
        lambdas = torch.tensor(self.lambdas, device=self.log_gain.device).log()[:, None]
        return _log_interpolated(lambdas, position)[:, 0]

    def hyperprior(self, hyper, k):
        """The hyper-synthesis' output [B, 2M, H, W] (all means, then all raw scales) → the
        prior of channel group k, [B, 2M_k, H, W]."""
        if len(self.groups) == 1:
            return hyper  # one group covers all of y: as it is, no copy
        (first, end), (mean, raw) = group_bounds(self.groups)[k], hyper.chunk(2, dim=1)
        return torch.cat([mean[:, first:end], raw[:, first:end]], dim=1)

    def condition(self, k, params, earlier):
        """context_passes' correction of group k from the groups before it (`conditioned`)."""
        return conditioned(self, k, params, earlier)

    def refine(self, k, params, anchor_hat):
        """context_passes' correction of group k at its non-anchors (`refined`)."""
        return refined(self, k, params, anchor_hat)

    def prior(self, hyper, y_hat):
        """The prior's output for decoded latents `y_hat` ([B, 2M, H, W]: means, raw scales)."""
        return join_groups(context_passes(self, self.groups, hyper,
                                          decoded(y_hat, self.groups))[1])

    def bits(self, z_hat, y_hat):
        """Bits the float prior assigns to quantized latents [1, N, h, w] and [1, M, H, W]: the
        model's own estimate of the rate, which the coded file should match."""
        mean, scale = mean_scale(self.prior(self.hyper_synthesis(z_hat), y_hat))
        y_bits = -torch.log2(gaussian_likelihood(y_hat - mean, scale).clamp_min(1e-12)).sum()
        z_bits = -torch.log2(self.z_prior.likelihood(z_hat).clamp_min(1e-12)).sum()
        return float(y_bits + z_bits)

    def forward(self, x, position):
        """Training pass: uniform noise for the rates, straight-through rounding for what the
        decoders see (mixed quantization). Returns the reconstruction and bits per image."""
        gain, inverse_gain = self.gains(position)
        y = self.analysis(x).float() * gain
        z = self.hyper_analysis(y).float()
        # Under mixed precision the transforms run in bf16 but the prior of y and the rate terms
        # stay in fp32: the coder's tables and means come from them.
        with torch.autocast(x.device.type, enabled=False):
            z_hat = rounded(z)
            z_noisy = z + torch.rand_like(z) - 0.5
            z_bits = -torch.log2(self.z_prior.likelihood(z_noisy).clamp_min(1e-9))
            y_hat, y_bits = self.quantized(y, self.hyper_synthesis(z_hat), MIXED_QUANTIZATION)
        x_hat = self.synthesis(y_hat * inverse_gain)
        bits = y_bits.sum(dim=(1, 2, 3)) + z_bits.sum(dim=(1, 2, 3))
        return x_hat.float(), bits

    def quantized(self, y, hyper, quantization):
        """ŷ and the bits of each element of y, under the context prior that starts from the
        hyper-synthesis output `hyper`. `quantization.decoded(v, mean, first_channel)` gives
        what the decoders see of v (y's channels from `first_channel` on) around its mean, and
        `quantization.rated(y, ŷ)` where the rate is measured: MIXED_QUANTIZATION in training,
        the encoder's annealed rounding in refine.py."""
        bounds = group_bounds(self.groups)

        def decide(k, params, anchors_only):
            first, end = bounds[k]
            return quantization.decoded(y[:, first:end], params.chunk(2, dim=1)[0], first)

        decided, priors = context_passes(self, self.groups, hyper, decide)
        mean, scale = mean_scale(join_groups(priors))
        y_hat = torch.cat(decided, dim=1)
        y_rated = quantization.rated(y, y_hat)
        return y_hat, -torch.log2(gaussian_likelihood(y_rated - mean, scale).clamp_min(1e-9))


class MixedQuantization:
    """Training's quantization of y (Minnen & Singh 2020): what the decoders see is rounded
    around the mean, straight through; the rate is measured at y plus uniform noise, the
    differentiable stand-in for rounding (Ballé et al. 2017)."""

    @staticmethod
    def decoded(v, mean, first_channel):
        return rounded(v, mean)

    @staticmethod
    def rated(v, v_hat):
        return v + torch.rand_like(v) - 0.5


MIXED_QUANTIZATION = MixedQuantization()
