"""The prior is exact: its results do not depend on the order in which a machine sums, so encoder
and decoder pick the same tables everywhere; and it stays close to the trained float model."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from vaecodec import codec, entropy, prior, weights
from vaecodec.model import SCALE_MIN, VAE, Y_CELL, Z_CELL, anchors, group_bounds, mean_scale
from vaecodec.prior import ACTIVATION_BITS, SCALE_THRESHOLDS, ExactPrior

from conftest import tiles_of


@pytest.fixture(scope="module")
def loaded():
    return weights.load()


@pytest.fixture(scope="module")
def latent(loaded, photo):
    """z and the decoded ŷ = s + μ of a real photo."""
    z, s, mean, _, _ = codec.latents(loaded, np.asarray(photo), 80)
    return z, torch.from_numpy(s) + mean


@pytest.fixture(scope="module")
def grouped():
    """A small model with three channel groups and random weights everywhere (the corrections
    of a new model start at zero), with latents for it."""
    torch.manual_seed(3)
    model = VAE(16, 24, groups=(4, 8, 12), hyper=(20, 28))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("hyper_synthesis", "channel_context", "spatial_context", "fusion")):
                parameter.normal_(0, 0.3 / parameter[0].numel() ** 0.5)
    rng = np.random.default_rng(4)
    z = rng.integers(-6, 7, size=(1, 16, 2, 3))
    y_hat = torch.from_numpy(np.round(rng.normal(0, 4, size=(1, 24, 8, 12)) * 2 ** 14) / 2 ** 14)
    return model, z, y_hat


def prior_of(prior, z, y_hat):
    """(μ, table) of every element of y, given all of ŷ."""
    return prior.split(prior.prior(prior.hyper(z), y_hat))


def nearest_scale(raw):
    """Index of the entry of SCALES nearest (in log space) to SCALE_MIN + softplus(raw)."""
    sigma = SCALE_MIN + np.logaddexp(0, raw)
    return int(np.argmin(np.abs(np.log(entropy.SCALES) - np.log(sigma))))


def test_format_md_lists_the_thresholds():
    text = (Path(__file__).resolve().parents[1] / "FORMAT.md").read_text()
    listed = text.split("(`prior.SCALE_THRESHOLDS`):")[1].split("They are where")[0]
    assert tuple(int(value) for value in listed.replace(",", " ").split()) == SCALE_THRESHOLDS


def test_thresholds_select_the_nearest_scale():
    boundaries = np.sqrt(entropy.SCALES[:-1] * entropy.SCALES[1:]) - SCALE_MIN
    derived = np.ceil(np.log(np.expm1(boundaries)) * 2.0 ** ACTIVATION_BITS).astype(np.int64)
    assert derived.tolist() == list(SCALE_THRESHOLDS)
    unit = 2.0 ** -ACTIVATION_BITS
    for k, threshold in enumerate(SCALE_THRESHOLDS):
        assert nearest_scale((threshold - 1) * unit) == k
        assert nearest_scale(threshold * unit) == k + 1


def permute_hidden(layers, rng):
    """Reorder the channels between every two consecutive convolutions of `layers`: the same
    function, summed in another order."""
    convs = [layer for layer in layers if isinstance(layer, torch.nn.Module) and
             hasattr(layer, "weight")]
    for first, second in zip(convs, convs[1:]):
        out_dim = 1 if isinstance(first, torch.nn.ConvTranspose2d) else 0
        in_dim = 0 if isinstance(second, torch.nn.ConvTranspose2d) else 1
        order = torch.from_numpy(rng.permutation(first.weight.shape[out_dim]))
        first.weight.copy_(first.weight.index_select(out_dim, order))
        first.bias.copy_(first.bias[order])
        second.weight.copy_(second.weight.index_select(in_dim, order))


def permuted(model, z, seed=0):
    """The same functions with channels reordered: z's channels, the hidden channels of every
    prior network, and the spatial contexts' outputs (which the fusions read). Every output is
    then summed in another order."""
    model = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    inputs = torch.from_numpy(rng.permutation(model.n))
    with torch.no_grad():
        first = model.hyper_synthesis[0]
        first.weight.copy_(first.weight[inputs])
        permute_hidden(model.hyper_synthesis, rng)
        for network in (*model.channel_context, *model.fusion):
            permute_hidden(network, rng)
        for size, spatial, fusion in zip(model.groups, model.spatial_context, model.fusion):
            order = torch.from_numpy(rng.permutation(size))
            spatial.weight.copy_(spatial.weight[order])
            spatial.bias.copy_(spatial.bias[order])
            columns = torch.cat([torch.arange(2 * size), 2 * size + order])
            fusion[0].weight.copy_(fusion[0].weight[:, columns])
    return model, z[:, inputs.numpy()]


def test_summation_order_does_not_change_a_bit(loaded, latent):
    z, y_hat = latent
    mean, table = prior_of(loaded.prior, z, y_hat)
    model, z_permuted = permuted(loaded.model, z)
    mean_permuted, table_permuted = prior_of(ExactPrior(model), z_permuted, y_hat)
    assert torch.equal(mean, mean_permuted)
    assert np.array_equal(table, table_permuted)
    # Control: the same reordering in plain float64 does change results.
    with torch.no_grad():
        plain = copy.deepcopy(loaded.model).double()
        reordered = model.double()
        plain = plain.prior(plain.hyper_synthesis(torch.from_numpy(z).double()), y_hat)
        reordered = reordered.prior(
            reordered.hyper_synthesis(torch.from_numpy(z_permuted).double()), y_hat)
    assert not torch.equal(plain, reordered)


def test_summation_order_does_not_change_a_bit_with_channel_groups(grouped):
    model, z, y_hat = grouped
    mean, table = prior_of(ExactPrior(model), z, y_hat)
    reordered, z_permuted = permuted(model, z)
    mean_permuted, table_permuted = prior_of(ExactPrior(reordered), z_permuted, y_hat)
    assert torch.equal(mean, mean_permuted) and np.array_equal(table, table_permuted)


def test_context_refines_only_the_non_anchors(loaded, latent):
    z, y_hat = latent
    params = loaded.prior.hyper(z)
    _, hyper_table = loaded.prior.split(params[0])  # one group: the whole hyperprior
    _, table = loaded.prior.split(loaded.prior.prior(params, y_hat))
    where = np.broadcast_to(anchors(*table.shape[2:]).numpy(), table.shape)
    assert np.array_equal(table[where], hyper_table[where])
    assert np.mean(table[~where] != hyper_table[~where]) > 0.1


def test_each_group_sees_only_what_is_decoded_before_it(grouped):
    """Changing ŷ of a group changes no prior of an earlier group nor of its own anchors, and
    does change what comes after: the decoder has everything a pass needs."""
    model, z, y_hat = grouped
    prior = ExactPrior(model)
    mean, table = prior_of(prior, z, y_hat)
    mask = anchors(*y_hat.shape[2:])
    for first, end in group_bounds(model.groups):
        changed = y_hat.clone()
        changed[:, first:end] += 3
        mean_changed, table_changed = prior_of(prior, z, changed)
        same = torch.zeros(y_hat.shape, dtype=torch.bool)
        same[:, :first] = True
        same[:, first:end] = mask
        assert torch.equal(mean[same], mean_changed[same])
        assert np.array_equal(table[same.numpy()], table_changed[same.numpy()])
        assert not torch.equal(mean[~same], mean_changed[~same])


def test_thread_count_does_not_change_a_bit(loaded, latent):
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(prior_of(loaded.prior, *latent))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_close_to_the_float_model(loaded, latent):
    z, y_hat = latent
    mean, table = prior_of(loaded.prior, z, y_hat)
    with torch.no_grad():
        params = loaded.model.hyper_synthesis(torch.from_numpy(z).float())
        mean_float, scale_float = mean_scale(loaded.model.prior(params, y_hat.float()))
    assert (mean - mean_float.double()).abs().max() < 0.01
    nearest = np.abs(np.log(entropy.SCALES)[:, None] - np.log(scale_float.numpy().ravel())).argmin(0)
    differs = table.ravel() != nearest
    assert np.abs(table.ravel() - nearest).max() <= 1 and differs.mean() < 0.005


def absurd_latents(model):
    """Hostile z and ŷ, far beyond anything an encoder makes: every clamp engages."""
    rng = np.random.default_rng(1)
    z = rng.integers(-1 << 40, 1 << 40, size=(1, model.n, 2, 3))
    y_hat = torch.from_numpy(rng.integers(-1 << 40, 1 << 40, size=(1, model.m, 8, 12)))
    return z, y_hat.double()


def test_absurd_latents_stay_exact(loaded):
    """The clamps keep every sum below 2^53 even for hostile values of z and of the decoded
    anchors, so the results still do not depend on the summation order (without them this
    fails)."""
    z, y_hat = absurd_latents(loaded.model)
    mean, table = prior_of(loaded.prior, z, y_hat)
    model, z_permuted = permuted(loaded.model, z)
    mean_permuted, table_permuted = prior_of(ExactPrior(model), z_permuted, y_hat)
    assert torch.equal(mean, mean_permuted) and np.array_equal(table, table_permuted)
    assert torch.isfinite(mean).all()
    assert table.min() >= 0 and table.max() < len(entropy.SCALES)


def test_absurd_latents_are_clamped_as_format_md_says(loaded, grouped):
    """A decoder written from FORMAT.md clamps hostile inputs to the same values: the limit's
    bias term, its 2^52 and a transposed convolution's taps all count (each breaks this)."""
    for model in (loaded.model, grouped[0]):
        z, y_hat = absurd_latents(model)
        mean, table = prior_of(ExactPrior(model), z, y_hat)
        reference_mean, reference_table = reference_prior(model, z, y_hat)
        assert np.array_equal(mean[0].numpy(), reference_mean)
        assert np.array_equal(table[0], reference_table)


def reference_network(layers, x, unit):
    """FORMAT.md's fixed-point arithmetic for a stack of layers, in plain numpy: x holds
    integers in units of `unit`; the result is in units of 2^-14."""
    step = 2.0 ** -ACTIVATION_BITS
    for layer in layers:
        if isinstance(layer, torch.nn.LeakyReLU):
            x = np.where(x < 0, np.floor(0.01 * x + 0.5), x)
            continue
        w = np.round(layer.weight.detach().double().numpy() * 2.0 ** 20)  # half to even
        bias = np.round(layer.bias.detach().double().numpy() * 2.0 ** 20 / unit)
        transposed = isinstance(layer, torch.nn.ConvTranspose2d)
        if transposed:
            w = w.transpose(1, 0, 2, 3)  # → [out, in, kh, kw]
        l1 = np.abs(w).sum(axis=(1, 2, 3)).max()
        x = np.clip(x, *[sign * np.floor((2.0 ** 52 - 1 - np.abs(bias).max()) / l1)
                         for sign in (-1, 1)])
        _, h, wd = x.shape
        k = w.shape[2]
        if transposed:  # stride 2, padding 2, output padding 1: output 2h × 2w
            full = np.zeros((w.shape[0], 2 * h + k - 1, 2 * wd + k - 1))
            for a in range(k):
                for b in range(k):
                    full[:, a:a + 2 * h:2, b:b + 2 * wd:2] += np.einsum("ihw,oi->ohw", x,
                                                                        w[:, :, a, b])
            total = full[:, 2:2 + 2 * h, 2:2 + 2 * wd]
        else:  # stride 1, padding k // 2
            padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
            total = sum(np.einsum("ihw,oi->ohw", padded[:, a:a + h, b:b + wd], w[:, :, a, b])
                        for a in range(k) for b in range(k))
        x = np.floor((total + bias[:, None, None]) * unit / 2.0 ** 20 / step + 0.5)
        unit = step
    return x


def reference_prior(model, z, y_hat):
    """FORMAT.md's description of the prior, written again in plain numpy (a different library
    and summation order): a decoder written from the document must get the same bits."""
    step = 2.0 ** -ACTIVATION_BITS
    mean, raw = np.split(reference_network(model.hyper_synthesis, z[0].astype(np.float64), 1.0), 2)
    _, h, w = mean.shape
    anchor = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0
    decoded = y_hat[0].numpy() / step
    means, raws, start = [], [], 0
    for k, size in enumerate(model.groups):
        params = np.concatenate([mean[start:start + size], raw[start:start + size]])
        if k:
            params = params + reference_network(model.channel_context[k - 1], decoded[:start],
                                                step)
        anchors_only = np.where(anchor, decoded[start:start + size], 0.0)
        context = reference_network([model.spatial_context[k]], anchors_only, step)
        correction = reference_network(model.fusion[k], np.concatenate([params, context]), step)
        params = np.where(anchor, params, params + correction)
        means.append(params[:size])
        raws.append(params[size:])
        start += size
    return (np.concatenate(means) * step,
            np.searchsorted(SCALE_THRESHOLDS, np.concatenate(raws), side="right"))


def test_format_md_description_gives_the_same_bits(loaded, latent):
    """An independent implementation of FORMAT.md agrees bit for bit (rounding the weights half
    up instead of half to even already breaks it)."""
    z, y_hat = latent
    mean, table = prior_of(loaded.prior, z, y_hat)
    reference_mean, reference_table = reference_prior(loaded.model, z, y_hat)
    assert np.array_equal(mean[0].numpy(), reference_mean)
    assert np.array_equal(table[0], reference_table)


@pytest.mark.parametrize("side, large_image_side", [(4, 4), (6, 4)])
def test_tiles_give_the_whole_grid_result_with_channel_groups(grouped, monkeypatch, side,
                                                              large_image_side):
    """Each network's margin covers its reach: tile by tile (2 × 3 tiles of 4 × 4 cells here; or
    the channel context in tiles of 6 × 6 and the rest in 4 × 4, as tiles.tile_side mixes them)
    the prior is the same, bit for bit."""
    model, z, y_hat = grouped
    whole = prior_of(ExactPrior(model), z, y_hat)
    tiles_of(monkeypatch, side * Y_CELL, large_image_side * Y_CELL)
    tiled = prior_of(ExactPrior(model), z, y_hat)
    assert torch.equal(whole[0], tiled[0]) and np.array_equal(whole[1], tiled[1])


@pytest.mark.parametrize("margin, same", [(prior.HYPER_MARGIN, True),
                                          (prior.HYPER_MARGIN - 1, False)])
def test_hyper_synthesis_tiles_need_the_hyper_margin(grouped, monkeypatch, margin, same):
    """The hyper-synthesis reaches two cells of z past a tile's bottom and right edges: in tiles
    of one cell of z, HYPER_MARGIN cells of context give the whole grid's hyperprior bit for
    bit, and one fewer does not (so this test sees a margin too small)."""
    model, _, _ = grouped
    z = np.random.default_rng(5).integers(-6, 7, size=(1, 16, 5, 6))
    whole = ExactPrior(model).hyper(z)
    tiles_of(monkeypatch, Z_CELL)
    monkeypatch.setattr(prior, "HYPER_MARGIN", margin)
    tiled = ExactPrior(model).hyper(z)
    assert all(torch.equal(a, b) for a, b in zip(whole, tiled)) == same


@pytest.mark.parametrize("side, large_image_side", [(5, 4), (4, 5)])
def test_tiles_that_would_shift_the_checkerboard_are_refused(grouped, monkeypatch, side,
                                                            large_image_side):
    """The context at the non-anchors reads a tile's own checkerboard: tiles must start on even
    rows and columns of y, or the tables would depend on the tiling (in either kind of tile)."""
    model, z, y_hat = grouped
    tiles_of(monkeypatch, side * Y_CELL, large_image_side * Y_CELL)
    with pytest.raises(ValueError, match="even rows and columns"):
        prior_of(ExactPrior(model), z, y_hat)


def test_format_md_description_gives_the_same_bits_with_channel_groups(grouped):
    model, z, y_hat = grouped
    mean, table = prior_of(ExactPrior(model), z, y_hat)
    reference_mean, reference_table = reference_prior(model, z, y_hat)
    assert np.array_equal(mean[0].numpy(), reference_mean)
    assert np.array_equal(table[0], reference_table)
