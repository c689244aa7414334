"""Images drawn from the learned prior: the generative use of the VAE.

z is drawn from its factorized prior, table by table; then the same checkerboard passes that code
y (`codec.residual_passes`) draw every residual from its table instead of coding one, and the
synthesis decodes the result. The prior models what the codec sees in photographs locally, so the
samples are textures with photographic statistics, not photographs.
"""

import numpy as np

from . import weights
from .codec import pixels, residual_passes, z_channel_tables
from .model import Z_CELL


def draw(rng, tables, index):
    """One value for every element of `index` (table numbers, any shape), drawn from its table."""
    values = np.empty(index.shape, dtype=np.int64)
    for k in np.unique(index):
        where = index == k
        pmf = tables.pmfs[k]
        values[where] = tables.lows[k] + rng.choice(len(pmf), size=int(where.sum()),
                                                    p=pmf / pmf.sum())
    return values


def sample(width, height, quality, seed, weights_path=None):
    """A width×height×3 uint8 image drawn from the prior at `quality` (the same seed, the same
    image)."""
    codec = weights.load(weights_path)
    rng = np.random.default_rng(seed)
    z_shape = (1, codec.model.n, -(-height // Z_CELL), -(-width // Z_CELL))
    z = draw(rng, codec.z_tables, z_channel_tables(z_shape))
    y_hat, _ = residual_passes(
        codec, z, lambda group, where, mean, table: draw(rng, codec.y_tables, table[where]))
    return pixels(codec, y_hat, quality, width, height)
