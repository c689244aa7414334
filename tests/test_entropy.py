"""The entropy coder and its agreement with the model."""

import constriction
import numpy as np
import pytest
import torch

from vaecodec import codec, compute, entropy, weights
from vaecodec.bitstream import Bitstream
from vaecodec.errors import CodecError
from vaecodec.model import VAE, anchors, group_bounds


@pytest.fixture(scope="module")
def loaded():
    return weights.load()


def test_tables_are_normalized(loaded):
    for tables in (loaded.y_tables, loaded.z_tables):
        for pmf in tables.pmfs:
            assert abs(pmf.sum() - 1) < 1e-6 and (pmf > 0).all()


def test_frequencies_follow_format_md():
    """FORMAT.md's worked example: every symbol 1, the other 2^24 − 3 shared by the pmf."""
    assert list(entropy.frequencies(np.array([0.5, 0.25, 0.25]))) == [8388607, 4194304, 4194305]


@pytest.mark.parametrize("name", ["vaecodec.pt", "candidate.pt"])
def test_frequencies_are_those_files_were_coded_with(name):
    """Every table of the weights codes as constriction's own quantization of it (which every
    file so far was coded with) did: a message holding each symbol gives the same words."""
    path = weights.default_path().with_name(name)
    if not path.exists():
        pytest.skip(f"no {name}")
    loaded = weights.Codec(path)
    for tables in (loaded.y_tables, loaded.z_tables):
        for pmf, model in zip(tables.pmfs, tables.models()):
            message = np.concatenate([np.arange(len(pmf)), np.arange(len(pmf))[::-3]])
            words = []
            for each in (model, constriction.stream.model.Categorical(pmf, perfect=False)):
                coder = constriction.stream.queue.RangeEncoder()
                coder.encode(message.astype(np.int32), each)
                words.append(coder.get_compressed())
            assert np.array_equal(*words)


class _StepAndLogistic:
    """A factorized prior whose channel 0 has collapsed onto the value 0 (as training leaves
    unused channels of z) and whose channel 1 is a logistic of scale 2."""

    def cdf(self, points):
        return torch.stack([(points > 0).double(), torch.sigmoid(points.double() / 2)])


def test_factorized_tables_keep_the_mass_off_their_escape_ends(loaded):
    for prior in (loaded.model.z_prior, _StepAndLogistic()):
        tables = entropy.factorized_tables(prior)
        for pmf in tables.pmfs:
            assert pmf[0] <= entropy.TAIL_MASS / 2 and pmf[-1] <= entropy.TAIL_MASS / 2
    zeros = np.zeros(4000, dtype=np.int64)
    data = entropy.encode(zeros, np.zeros_like(zeros), tables)
    assert len(data) <= 8  # a certain value costs nothing, not an escape per element
    assert np.array_equal(entropy.decode(data, np.zeros_like(zeros), tables), zeros)


def test_values_far_outside_the_tables_round_trip(loaded):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 3, size=2000).round().astype(np.int64)
    values[::97] = rng.integers(-60000, 60000, size=values[::97].shape)
    table = rng.integers(0, len(entropy.SCALES), size=values.shape)
    data = entropy.encode(values, table, loaded.y_tables)
    assert np.array_equal(entropy.decode(data, table, loaded.y_tables), values)


def test_passes_follow_one_another_with_their_escapes(loaded):
    """A stream of two passes holds exactly what FORMAT.md says, written here with constriction
    directly: per pass, the symbols grouped by table (raster order within a table), then the
    escape distances of that pass."""
    rng = np.random.default_rng(1)
    passes = []
    for _ in range(2):
        values = rng.normal(0, 3, size=300).round().astype(np.int64)
        values[::37] = rng.integers(-60000, 60000, size=values[::37].shape)
        passes.append((values, rng.integers(0, len(entropy.SCALES), size=values.shape)))
    encoder = entropy.Encoder(loaded.y_tables)
    for values, table in passes:
        encoder.encode(values, table)
    data = encoder.finish()

    tables, reference = loaded.y_tables, constriction.stream.queue.RangeEncoder()
    for values, table in passes:
        order = np.argsort(table, kind="stable")
        low = tables.lows[table[order]]
        high = low + np.array([len(tables.pmfs[k]) for k in table[order]]) - 1
        ordered = values[order]
        for k in np.unique(table):
            at = table[order] == k
            symbols = np.clip(ordered[at], low[at], high[at]) - low[at]
            reference.encode(symbols.astype(np.int32),
                             constriction.stream.model.Categorical(tables.pmfs[k], perfect=False))
        distance = np.where(ordered <= low, low - ordered, ordered - high)
        reference.encode(distance[(ordered <= low) | (ordered >= high)].astype(np.int32),
                         constriction.stream.model.Uniform(entropy.ESCAPE_RANGE))
    assert data == reference.get_compressed().astype("<u4").tobytes()

    decoder = entropy.Decoder(data, loaded.y_tables)
    for values, table in passes:
        assert np.array_equal(decoder.decode(table), values)


def test_the_escape_range_reaches_exactly_as_far_as_format_md_says(loaded):
    """Values up to ESCAPE_RANGE − 1 beyond a table's ends round-trip; one further is refused
    with the coder's one-line error, not constriction's own."""
    tables, table = loaded.y_tables, np.zeros(1, np.int64)
    low = int(tables.lows[0])
    high = low + len(tables.pmfs[0]) - 1
    for value in (low - entropy.ESCAPE_RANGE + 1, high + entropy.ESCAPE_RANGE - 1):
        data = entropy.encode(np.array([value]), table, tables)
        assert entropy.decode(data, table, tables)[0] == value
    for value in (low - entropy.ESCAPE_RANGE, high + entropy.ESCAPE_RANGE):
        with pytest.raises(CodecError, match="out of the coder's range"):
            entropy.encode(np.array([value]), table, tables)


def test_gaussian_tables_are_those_of_the_shipped_weights(loaded):
    """An export tabulates the y tables afresh: they must be the ones every file was coded
    with, each end symbol holding at most TAIL_MASS / 2."""
    fresh, shipped = entropy.gaussian_tables(), loaded.y_tables
    assert np.array_equal(fresh.lows, shipped.lows)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.pmfs, shipped.pmfs, strict=True))
    for pmf in fresh.pmfs:
        assert pmf[0] <= entropy.TAIL_MASS / 2 and pmf[-1] <= entropy.TAIL_MASS / 2


@pytest.mark.parametrize("far", [entropy.ESCAPE_RANGE + 100, 2 ** 32 + 3, -(2 ** 40)])
def test_values_beyond_the_escape_range_are_refused(loaded, far):
    """Also those that the coder's int32 would wrap into range (2^32 + 3 to 3)."""
    values = np.array([0, far])
    with pytest.raises(CodecError, match="out of the coder's range"):
        entropy.encode(values, np.zeros(2, np.int64), loaded.y_tables)


def test_odd_length_sections_are_refused(loaded):
    with pytest.raises(CodecError, match="multiple of 4"):
        entropy.decode(b"abc", np.zeros(10, np.int64), loaded.y_tables)


def test_random_sections_decode_to_values_or_codec_error(loaded):
    rng = np.random.default_rng(3)
    table = rng.integers(0, len(entropy.SCALES), size=500)
    for length in (0, 4, 8, 64, 400):
        try:
            values = entropy.decode(rng.bytes(length), table, loaded.y_tables)
        except CodecError:
            continue
        assert values.shape == table.shape


def test_bitstream_carries_exactly_the_model_latents(photo, loaded):
    """Decoding the sections gives back the model's own quantized latents, the decoded image is
    the model's reconstruction, and the file costs what the model's prior predicts. In fp32, as
    the model computes (bf16 may round a few elements of y the other way)."""
    image = photo.crop((0, 0, 128, 64))  # a multiple of the stride: the model needs no padding
    rgb = np.asarray(image)
    quality = 60
    fp32 = compute.transforms(loaded.model, "cpu", "fp32")
    z, s, mean, table, y_bytes = codec.latents(loaded, rgb, quality, fp32)
    stream = Bitstream.from_bytes(codec.compress(image, quality, precision="fp32"))
    assert stream.y == y_bytes
    # The y section holds the anchors, then the other half of the checkerboard.
    where = np.broadcast_to(anchors(*s.shape[2:]).numpy(), s.shape)
    decoder = entropy.Decoder(stream.y, loaded.y_tables)
    assert np.array_equal(decoder.decode(table[where]), s[where])
    assert np.array_equal(decoder.decode(table[~where]), s[~where])
    z_tables = codec.z_channel_tables(z.shape)
    assert np.array_equal(entropy.decode(stream.z, z_tables, loaded.z_tables), z)

    model = loaded.model
    x = torch.tensor(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        x_hat, _ = model(x, model.position(quality))
    expected = x_hat[0].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    decoded = np.asarray(codec.decompress(stream.to_bytes(), precision="fp32")).astype(np.float64)
    assert np.abs(decoded - expected).max() <= 2
    assert np.mean(decoded != expected) < 0.01

    with torch.no_grad():
        estimate = model.bits(torch.from_numpy(z).float(), (torch.from_numpy(s) + mean).float())
    actual = 8 * (len(stream.y) + len(stream.z))
    assert abs(actual - estimate) < 0.03 * estimate + 64


def test_channel_groups_are_coded_group_by_group(photo, tmp_path):
    """With several channel groups the y section holds, for each group in turn, its anchors and
    then its other elements (FORMAT.md), and the decoder rebuilds exactly the encoder's latents,
    means and tables from the file alone."""
    torch.manual_seed(5)
    model = VAE(16, 24, groups=(4, 8, 12), hyper=(20, 28))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("channel_context", "fusion")):
                parameter.normal_(0, 0.05)
    weights.save_weights(model, tmp_path / "grouped.pt")
    grouped = weights.load(tmp_path / "grouped.pt")
    rgb = np.asarray(photo)
    z, s, mean, table, y_bytes = codec.latents(grouped, rgb, 50)
    mask = anchors(*s.shape[2:]).numpy()
    decoder = entropy.Decoder(y_bytes, grouped.y_tables)
    for first, end in group_bounds(model.groups):
        for where in (mask, ~mask):
            chosen = np.zeros(s.shape, dtype=bool)
            chosen[:, first:end] = where
            assert np.array_equal(decoder.decode(table[chosen]), s[chosen])

    decoder = entropy.Decoder(y_bytes, grouped.y_tables)
    y_hat, decoded = codec.residual_passes(
        grouped, z, lambda group, where, m, t: decoder.decode(t[where]), keep=True)
    assert np.array_equal(decoded[0], s) and torch.equal(decoded[1], mean)
    assert np.array_equal(decoded[2], table)
    # ŷ comes group by group, exactly s + μ
    assert torch.equal(torch.cat(y_hat, dim=1), torch.from_numpy(s) + mean)
    assert [block.shape[1] for block in y_hat] == list(model.groups)
    data = codec.compress(photo, 50, weights_path=tmp_path / "grouped.pt")
    image = codec.decompress(data, weights_path=tmp_path / "grouped.pt")
    expected = codec.pixels(grouped, y_hat, 50, rgb.shape[1], rgb.shape[0])
    assert np.array_equal(np.asarray(image), expected)
