"""A wider model started from a trained narrower one (`vaecodec train --init FILE --widen`), so
that a new model shape starts where the shipped model stands rather than from random weights.

Every tensor of the narrow model is copied into the matching channels of the wide one (Net2Net,
Chen et al. 2016). A channel the narrow model lacks starts silent: its incoming weights and bias
are zero, so it outputs zero (GDN and LeakyReLU keep zero at zero), while its outgoing weights
keep their random start, so that the gradient reaches it. The narrow model's latents go to the
start of the wide model's last channel groups, one group each (a one-group model's to the last
group, where its spatial context still sees all of them); the new latents are zero and their
prior is a mean of zero at the smallest scale, so they cost no bits. At the narrow model's λ the
wide model then codes as the narrow one did; a λ it lacks gets gains extrapolated from the
nearest one it has (quantization step ∝ 1/√λ).
"""

import math

import torch

from .model import VAE, group_bounds

# The prior's raw scale of a silent latent: softplus(-6) + SCALE_MIN ≈ SCALE_MIN, where a zero
# costs about 10⁻⁵ bits.
SILENT_RAW_SCALE = -6.0


def widened(model, init):
    """`model` (a fresh VAE, at least as wide everywhere) started from `init`, a weights file's
    dictionary as weights.read gives it, as the module docstring says. Raises ValueError when
    the init model does not fit."""
    narrow = VAE(**init["config"])
    narrow.load_state_dict(init["state_dict"])
    y, layers = _layout(narrow, model)
    narrow_state, wide_state = narrow.state_dict(), model.state_dict()  # the latter: views
    with torch.no_grad():
        for name, (wide_name, *maps) in layers.items():
            _copy_conv(wide_state, narrow_state, name, wide_name, *maps)
        for name in (f"{transform}.{index}" for transform in ("analysis", "synthesis")
                     for index in (1, 3, 5)):  # the GDNs: their channels keep their places
            beta, gamma = narrow_state[f"{name}.beta"], narrow_state[f"{name}.gamma"]
            channels = torch.arange(len(beta))
            wide_state[f"{name}.beta"][channels] = beta
            wide_state[f"{name}.gamma"][channels[:, None], channels[None, :]] = gamma
        # New latents: a mean of zero (their rows are zero already) at the smallest scale.
        raw = wide_state["hyper_synthesis.4.bias"][model.m:]
        silent = torch.ones(model.m, dtype=torch.bool)
        silent[y] = False
        raw[silent] = SILENT_RAW_SCALE
        _copy_z_prior(wide_state, narrow)
        _copy_gains(wide_state, narrow, model, y)
    return model


def _layout(narrow, wide):
    """Where each of the narrow model's convolutions goes in the wide one: y's channel map and
    {narrow name: (wide name, output channel map, input channel map, transposed[, inputs to
    silence])}. The inputs to silence are a group's new raw scales in its fusion: unlike the
    new latents and means, they are not zero."""
    for what, small, large in (("analysis width", narrow.n, wide.n),
                               ("latent channels", narrow.m, wide.m),
                               ("channel groups", len(narrow.groups), len(wide.groups)),
                               *(("synthesis width", a, b) for a, b in
                                 zip(narrow.synthesis_widths, wide.synthesis_widths)),
                               *(("hyper-synthesis width", a, b) for a, b in
                                 zip(narrow.hyper, wide.hyper))):
        if small > large:
            raise ValueError(f"cannot widen: the init model's {what} {small} exceeds {large}")
    shift = len(wide.groups) - len(narrow.groups)  # narrow group k → wide group k + shift
    narrow_bounds, wide_bounds = group_bounds(narrow.groups), group_bounds(wide.groups)
    y = []
    for k, (first, end) in enumerate(narrow_bounds):
        wide_first, wide_end = wide_bounds[k + shift]
        if end - first > wide_end - wide_first:
            raise ValueError(f"cannot widen: the init model's channel group {k + 1} "
                             f"({end - first}) exceeds the wide model's ({wide_end - wide_first})")
        y.append(torch.arange(wide_first, wide_first + end - first))
    y = torch.cat(y)
    same = torch.arange  # channels that keep their places
    rgb, n = same(3), same(narrow.n)
    s1, s2, s3 = (same(width) for width in narrow.synthesis_widths)
    h1, h2 = (same(width) for width in narrow.hyper)
    layers = {
        "analysis.0": ("analysis.0", n, rgb, False),
        "analysis.2": ("analysis.2", n, n, False),
        "analysis.4": ("analysis.4", n, n, False),
        "analysis.6": ("analysis.6", y, n, False),
        "synthesis.0": ("synthesis.0", s1, y, True),
        "synthesis.2": ("synthesis.2", s2, s1, True),
        "synthesis.4": ("synthesis.4", s3, s2, True),
        "synthesis.6": ("synthesis.6", rgb, s3, True),
        "hyper_analysis.0": ("hyper_analysis.0", n, y, False),
        "hyper_analysis.2": ("hyper_analysis.2", n, n, False),
        "hyper_analysis.4": ("hyper_analysis.4", n, n, False),
        "hyper_synthesis.0": ("hyper_synthesis.0", h1, n, True),
        "hyper_synthesis.2": ("hyper_synthesis.2", h2, h1, True),
        "hyper_synthesis.4": ("hyper_synthesis.4", torch.cat([y, wide.m + y]), h2, False),
    }
    for k, (first, end) in enumerate(narrow_bounds):
        wide_k, size = k + shift, end - first
        wide_size = wide.groups[wide_k]
        local = same(size)  # the group's channels sit at the start of the wide group
        pair = torch.cat([local, wide_size + local])  # [means, raw scales] of the group
        layers[f"spatial_context.{k}"] = (f"spatial_context.{wide_k}", local, local, False)
        layers[f"fusion.{k}.0"] = (f"fusion.{wide_k}.0", same(2 * size),
                                   torch.cat([pair, 2 * wide_size + local]), False,
                                   same(wide_size + size, 2 * wide_size))
        layers[f"fusion.{k}.2"] = (f"fusion.{wide_k}.2", pair, same(2 * size), False)
        if k:
            hidden = same(narrow.channel_context[k - 1][0].out_channels)
            layers[f"channel_context.{k - 1}.0"] = (f"channel_context.{wide_k - 1}.0", hidden,
                                                     y[:first], False)
            layers[f"channel_context.{k - 1}.2"] = (f"channel_context.{wide_k - 1}.2", hidden,
                                                     hidden, False)
            layers[f"channel_context.{k - 1}.4"] = (f"channel_context.{wide_k - 1}.4", pair,
                                                     hidden, False)
    return y, layers


def _copy_conv(wide_state, narrow_state, name, wide_name, out_map, in_map, transposed,
               silenced_inputs=None):
    """The narrow convolution's weights and bias into the wide one's channels; the wide one's
    other output channels silenced (weights and bias zero), and so are the weights of
    `silenced_inputs` into the narrow model's outputs; its other inputs are left as they are."""
    weight, bias = wide_state[f"{wide_name}.weight"], wide_state[f"{wide_name}.bias"]
    out_dim = 1 if transposed else 0  # a transposed convolution's weight is [in, out, kh, kw]
    silent = torch.ones(weight.shape[out_dim], dtype=torch.bool)
    silent[out_map] = False
    if transposed:
        weight[:, silent] = 0
        weight[in_map[:, None], out_map[None, :]] = narrow_state[f"{name}.weight"]
    else:
        weight[silent] = 0
        weight[out_map[:, None], in_map[None, :]] = narrow_state[f"{name}.weight"]
        if silenced_inputs is not None:
            weight[out_map[:, None], silenced_inputs] = 0
    bias[silent] = 0
    bias[out_map] = narrow_state[f"{name}.bias"]


def _copy_z_prior(wide_state, narrow):
    """z's densities: the narrow model's channels where they are, every new channel the density
    of the narrow channel that puts most mass on zero (the new channels of z are zero)."""
    with torch.no_grad():
        zero_mass = narrow.z_prior.likelihood(torch.zeros(1, narrow.n, 1, 1)).flatten()
    peaked = int(zero_mass.argmax())
    for name, value in narrow.z_prior.state_dict().items():
        target = wide_state[f"z_prior.{name}"]
        target[narrow.n:] = value[peaked]
        target[:narrow.n] = value


def _copy_gains(wide_state, narrow, wide, y):
    """The gains of the narrow model's latents at each of the wide model's λ: the narrow row of
    the same λ, or the nearest one's scaled by √(λ / its λ) (the inverse gain by the inverse)."""
    narrow_lambdas = torch.tensor(narrow.lambdas, dtype=torch.float64).log()
    for row, lam in enumerate(wide.lambdas):
        nearest = int((narrow_lambdas - math.log(lam)).abs().argmin())
        shift = 0.5 * (math.log(lam) - float(narrow_lambdas[nearest]))
        wide_state["log_gain"][row, y] = narrow.log_gain[nearest] + shift
        wide_state["log_inverse_gain"][row, y] = narrow.log_inverse_gain[nearest] - shift
