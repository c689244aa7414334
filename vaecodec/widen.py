"""A wider model started from a trained narrower one (`vaecodec train --init FILE --widen`), so
that a new model shape starts where the shipped model stands rather than from random weights.

Every tensor of the narrow model is copied into the matching channels of the wide one (Net2Net,
Chen et al. 2016). A channel the narrow model lacks starts silent: its incoming weights and bias
are zero, so it outputs zero (GDN and LeakyReLU keep zero at zero), while its outgoing weights
keep their random start, so that the gradient reaches it. The narrow model's channel groups go
to the start of the wide model's last groups, one group each (a one-group model's to the last
group, where its spatial context still sees all of them); the new latents are zero and their
prior is a mean of zero at the smallest scale, so a file codes them in next to no bits (training
measures them with noise added: about 0.15 bit each, 0.1 bpp for 160 new channels, which its
first log lines show). At the narrow model's λ the wide model then codes as the narrow one did.
"""

import math
from typing import NamedTuple

import numpy as np
import torch

from .model import group_bounds, interpolated_rows

# The prior's raw scale of a silent latent: softplus(-6) + SCALE_MIN ≈ SCALE_MIN, where a zero
# costs about 10⁻⁵ bits.
SILENT_RAW_SCALE = -6.0


class Placement(NamedTuple):
    """Where one of the narrow model's convolutions goes in the wide model."""
    wide_name: str
    outputs: torch.Tensor  # the wide output channel of each narrow one
    inputs: torch.Tensor  # the wide input channel of each narrow one
    transposed: bool  # a transposed convolution: its weight is [in, out, kh, kw]
    silenced_inputs: torch.Tensor = None  # wide inputs cut off from the narrow outputs


def widened(model, narrow):
    """`model`, a freshly built VAE at least as wide everywhere, started from the trained VAE
    `narrow` as the module docstring says. Corrections of the context that `narrow` lacks (the
    new groups') keep their fresh start, which is zero. Raises ValueError when `narrow` does not
    fit."""
    y, placements = _layout(narrow, model)
    narrow_state, wide_state = narrow.state_dict(), model.state_dict()  # the latter: views
    with torch.no_grad():
        for name, placement in placements.items():
            _copy_conv(wide_state, narrow_state, name, placement)
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
    """y's channel map and the Placement of each of the narrow model's convolutions."""
    for what, small, large, option in (
            ("analysis width", narrow.n, wide.n, "--channels"),
            ("latent channels", narrow.m, wide.m, "--latents"),
            ("number of channel groups", len(narrow.groups), len(wide.groups), "--groups"),
            *((f"synthesis width {i + 1}", a, b, "--channels, which sets them to N, 2N/3, N/2")
              for i, (a, b) in enumerate(zip(narrow.synthesis_widths, wide.synthesis_widths))),
            *((f"hyper-synthesis width {i + 1}", a, b, "--hyper")
              for i, (a, b) in enumerate(zip(narrow.hyper, wide.hyper)))):
        if small > large:
            raise ValueError(f"cannot widen: the init model's {what}, {small}, exceeds the wide "
                             f"model's {large} (see {option})")
    shift = len(wide.groups) - len(narrow.groups)  # narrow group k → wide group k + shift
    narrow_bounds, wide_bounds = group_bounds(narrow.groups), group_bounds(wide.groups)
    y = []
    for k, (first, end) in enumerate(narrow_bounds):
        wide_first, wide_end = wide_bounds[k + shift]
        if end - first > wide_end - wide_first:
            raise ValueError(
                f"cannot widen: the init model's channel group {k + 1} ({end - first} channels) "
                f"goes to group {k + shift + 1} of --groups, which has {wide_end - wide_first} "
                f"(the init model's groups go to the last groups)")
        y.append(torch.arange(wide_first, wide_first + end - first))
    y = torch.cat(y)
    same = torch.arange  # channels that keep their places
    rgb, n = same(3), same(narrow.n)
    s1, s2, s3 = (same(width) for width in narrow.synthesis_widths)
    h1, h2 = (same(width) for width in narrow.hyper)
    placements = {name: Placement(name, *maps) for name, maps in {
        "analysis.0": (n, rgb, False),
        "analysis.2": (n, n, False),
        "analysis.4": (n, n, False),
        "analysis.6": (y, n, False),
        "synthesis.0": (s1, y, True),
        "synthesis.2": (s2, s1, True),
        "synthesis.4": (s3, s2, True),
        "synthesis.6": (rgb, s3, True),
        "hyper_analysis.0": (n, y, False),
        "hyper_analysis.2": (n, n, False),
        "hyper_analysis.4": (n, n, False),
        "hyper_synthesis.0": (h1, n, True),
        "hyper_synthesis.2": (h2, h1, True),
        "hyper_synthesis.4": (torch.cat([y, wide.m + y]), h2, False),  # [means, raw scales]
    }.items()}
    for k, (first, end) in enumerate(narrow_bounds):
        wide_k, size = k + shift, end - first
        wide_size = wide.groups[wide_k]
        local = same(size)  # the group's channels sit at the start of the wide group
        pair = torch.cat([local, wide_size + local])  # [means, raw scales] of the group
        # The group's new raw scales are not zero, unlike its new latents and means: they must
        # not reach what the fusion computes for the narrow channels.
        new_raw_scales = torch.arange(wide_size + size, 2 * wide_size)
        placements[f"spatial_context.{k}"] = Placement(
            f"spatial_context.{wide_k}", local, local, False)
        placements[f"fusion.{k}.0"] = Placement(  # of [means, raw scales, spatial context]
            f"fusion.{wide_k}.0", same(2 * size), torch.cat([pair, 2 * wide_size + local]),
            False, new_raw_scales)
        placements[f"fusion.{k}.2"] = Placement(f"fusion.{wide_k}.2", pair, same(2 * size), False)
        if k:  # over the groups before it
            hidden = same(narrow.channel_context[k - 1][0].out_channels)
            for index, outputs, inputs in ((0, hidden, y[:first]), (2, hidden, hidden),
                                           (4, pair, hidden)):
                placements[f"channel_context.{k - 1}.{index}"] = Placement(
                    f"channel_context.{wide_k - 1}.{index}", outputs, inputs, False)
    return y, placements


def _copy_conv(wide_state, narrow_state, name, placement):
    """The narrow convolution's weights and bias into the wide one's channels; the wide one's
    other output channels silenced (weights and bias zero), and so are the weights from
    `silenced_inputs` to the narrow outputs; its other inputs are left as they are."""
    weight = wide_state[f"{placement.wide_name}.weight"]
    bias = wide_state[f"{placement.wide_name}.bias"]
    outputs, inputs = placement.outputs, placement.inputs
    silent = torch.ones(len(bias), dtype=torch.bool)
    silent[outputs] = False
    if placement.transposed:
        weight[:, silent] = 0
        weight[inputs[:, None], outputs[None, :]] = narrow_state[f"{name}.weight"]
    else:
        weight[silent] = 0
        weight[outputs[:, None], inputs[None, :]] = narrow_state[f"{name}.weight"]
        if placement.silenced_inputs is not None:
            weight[outputs[:, None], placement.silenced_inputs] = 0
    bias[silent] = 0
    bias[outputs] = narrow_state[f"{name}.bias"]


def _copy_z_prior(wide_state, narrow):
    """z's densities: the narrow model's channels where they are, every new channel the density
    of the narrow channel that puts most mass on zero (the new channels of z are zero)."""
    zero_mass = narrow.z_prior.likelihood(torch.zeros(1, narrow.n, 1, 1)).flatten()
    peaked = int(zero_mass.argmax())
    for name, value in narrow.z_prior.state_dict().items():
        target = wide_state[f"z_prior.{name}"]
        target[narrow.n:] = value[peaked]
        target[:narrow.n] = value


def _copy_gains(wide_state, narrow, wide, y):
    """The narrow latents' gains at each of the wide model's λ: the narrow model's own at its
    λ, interpolated between them as the narrow model does (model.interpolated_rows, at the
    position of λ among its λ in log space); beyond its range, the nearest end's scaled by
    √(λ / its λ) (quantization step ∝ 1/√λ) and the inverse gain by the inverse."""
    logs = np.log(narrow.lambdas)
    for row, log_lambda in enumerate(map(math.log, wide.lambdas)):
        position = torch.tensor([np.interp(log_lambda, logs, np.arange(len(logs)))])  # clamped
        beyond = 0.5 * (log_lambda - min(max(log_lambda, logs[0]), logs[-1]))
        for name, sign in (("log_gain", 1), ("log_inverse_gain", -1)):
            wide_state[name][row, y] = (interpolated_rows(getattr(narrow, name), position)[0]
                                        + sign * beyond)
