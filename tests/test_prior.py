"""The prior is exact: its results do not depend on the order in which a machine sums, so encoder
and decoder pick the same tables everywhere; and it stays close to the trained float model."""

import copy

import numpy as np
import pytest
import torch

from vaecodec import codec, entropy, weights
from vaecodec.model import SCALE_MIN
from vaecodec.prior import ACTIVATION_BITS, SCALE_THRESHOLDS, ExactPrior


@pytest.fixture(scope="module")
def loaded():
    return weights.load()


@pytest.fixture(scope="module")
def z(loaded, photo):
    z, _, _ = codec.latents(loaded, np.asarray(photo), 80)
    return z


def nearest_scale(raw):
    """Index of the entry of SCALES nearest (in log space) to SCALE_MIN + softplus(raw)."""
    sigma = SCALE_MIN + np.logaddexp(0, raw)
    return int(np.argmin(np.abs(np.log(entropy.SCALES) - np.log(sigma))))


def test_thresholds_select_the_nearest_scale():
    boundaries = np.sqrt(entropy.SCALES[:-1] * entropy.SCALES[1:]) - SCALE_MIN
    derived = np.ceil(np.log(np.expm1(boundaries)) * 2.0 ** ACTIVATION_BITS).astype(np.int64)
    assert derived.tolist() == list(SCALE_THRESHOLDS)
    unit = 2.0 ** -ACTIVATION_BITS
    for k, threshold in enumerate(SCALE_THRESHOLDS):
        assert nearest_scale((threshold - 1) * unit) == k
        assert nearest_scale(threshold * unit) == k + 1


def permuted(hyper_synthesis, z, seed=0):
    """The same function with the input channels and the first hidden channels reordered: a
    different summation order for every output."""
    layers = copy.deepcopy(hyper_synthesis)
    first, second = layers[0], layers[2]
    rng = np.random.default_rng(seed)
    inputs = torch.from_numpy(rng.permutation(first.in_channels))
    hidden = torch.from_numpy(rng.permutation(first.out_channels))
    with torch.no_grad():
        first.weight.copy_(first.weight[inputs][:, hidden])
        first.bias.copy_(first.bias[hidden])
        second.weight.copy_(second.weight[hidden])
    return layers, z[:, inputs.numpy()]


def test_summation_order_does_not_change_a_bit(loaded, z):
    mean, table = loaded.prior(z)
    layers, z_permuted = permuted(loaded.model.hyper_synthesis, z)
    mean_permuted, table_permuted = ExactPrior(layers)(z_permuted)
    assert torch.equal(mean, mean_permuted)
    assert np.array_equal(table, table_permuted)
    # Control: the same reordering in plain float64 does change results.
    with torch.no_grad():
        plain = copy.deepcopy(loaded.model.hyper_synthesis).double()(torch.from_numpy(z).double())
        reordered = layers.double()(torch.from_numpy(z_permuted).double())
    assert not torch.equal(plain, reordered)


def test_thread_count_does_not_change_a_bit(loaded, z):
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(loaded.prior(z))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_close_to_the_float_model(loaded, z):
    mean, table = loaded.prior(z)
    with torch.no_grad():
        mean_float, scale_float = loaded.model.prior(torch.from_numpy(z).float())
    assert (mean - mean_float.double()).abs().max() < 0.01
    nearest = np.abs(np.log(entropy.SCALES)[:, None] - np.log(scale_float.numpy().ravel())).argmin(0)
    differs = table.ravel() != nearest
    assert np.abs(table.ravel() - nearest).max() <= 1 and differs.mean() < 0.005


def test_absurd_hyper_latents_stay_exact(loaded):
    """The clamps keep every sum below 2^53 even for hostile values of z, so the results still do
    not depend on the summation order (without them this fails)."""
    z = np.random.default_rng(1).integers(-1 << 40, 1 << 40, size=(1, loaded.model.n, 2, 3))
    mean, table = loaded.prior(z)
    layers, z_permuted = permuted(loaded.model.hyper_synthesis, z)
    mean_permuted, table_permuted = ExactPrior(layers)(z_permuted)
    assert torch.equal(mean, mean_permuted) and np.array_equal(table, table_permuted)
    assert torch.isfinite(mean).all()
    assert table.min() >= 0 and table.max() < len(entropy.SCALES)


def reference_prior(hyper_synthesis, z):
    """FORMAT.md's description of the prior, written again in plain numpy (a different library
    and summation order): a decoder written from the document must get the same bits."""
    step = 2.0 ** -ACTIVATION_BITS
    x, unit = z[0].astype(np.float64), 1.0  # x holds multiples of `unit`, as integers
    for layer in hyper_synthesis:
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
    mean, raw = np.split(x, 2)
    return mean * step, np.searchsorted(SCALE_THRESHOLDS, raw, side="right")


def test_format_md_description_gives_the_same_bits(loaded, z):
    """An independent implementation of FORMAT.md agrees bit for bit (rounding the weights half
    up instead of half to even already breaks it)."""
    mean, table = loaded.prior(z)
    reference_mean, reference_table = reference_prior(loaded.model.hyper_synthesis, z)
    assert np.array_equal(mean[0].numpy(), reference_mean)
    assert np.array_equal(table[0], reference_table)
