"""The entropy coder and its agreement with the model."""

import numpy as np
import pytest
import torch

from vaecodec import codec, entropy, weights
from vaecodec.bitstream import Bitstream
from vaecodec.errors import CodecError
from vaecodec.model import gaussian_likelihood, quality_position


@pytest.fixture(scope="module")
def loaded():
    return weights.load()


def test_tables_are_normalized(loaded):
    for tables in (loaded.y_tables, loaded.z_tables):
        for pmf in tables.pmfs:
            assert abs(pmf.sum() - 1) < 1e-6 and (pmf > 0).all()


def test_values_far_outside_the_tables_round_trip(loaded):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 3, size=2000).round().astype(np.int64)
    values[::97] = rng.integers(-60000, 60000, size=values[::97].shape)
    table = rng.integers(0, len(entropy.SCALES), size=values.shape)
    data = entropy.encode(values, table, loaded.y_tables)
    assert np.array_equal(entropy.decode(data, table, loaded.y_tables), values)


def test_values_beyond_the_escape_range_are_refused(loaded):
    values = np.array([0, entropy.ESCAPE_RANGE + 100])
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
    the model's reconstruction, and the file costs what the model's prior predicts."""
    image = photo.crop((0, 0, 128, 64))  # a multiple of the stride: the model needs no padding
    rgb = np.asarray(image)
    quality = 60
    z, s, table = codec.latents(loaded, rgb, quality)
    stream = Bitstream.from_bytes(codec.compress(image, quality))
    assert np.array_equal(entropy.decode(stream.y, table, loaded.y_tables), s)
    z_tables = codec._z_tables(z.shape)
    assert np.array_equal(entropy.decode(stream.z, z_tables, loaded.z_tables), z)

    model = loaded.model
    x = torch.tensor(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        x_hat, _ = model(x, torch.tensor([quality_position(quality)]))
    expected = x_hat[0].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    decoded = np.asarray(codec.decompress(stream.to_bytes())).astype(np.float64)
    assert np.abs(decoded - expected).max() <= 2
    assert np.mean(decoded != expected) < 0.01

    _, scale = model.prior(torch.from_numpy(z).float())
    y_bits = -np.log2(gaussian_likelihood(torch.from_numpy(s).double(), scale.double())
                      .clamp_min(1e-12).numpy()).sum()
    z_bits = -np.log2(model.z_prior.likelihood(torch.from_numpy(z).float())
                      .clamp_min(1e-12).numpy()).sum()
    actual = 8 * (len(stream.y) + len(stream.z))
    assert abs(actual - (y_bits + z_bits)) < 0.03 * (y_bits + z_bits) + 64
