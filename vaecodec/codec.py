"""Image ⇄ bitstream: the data flow of the codec, top to bottom.

compress:   pixels → pad to a multiple of STRIDE → analysis · gain → y
            y → hyper_analysis → round → z        (coded against the factorized prior)
            z → hyper_synthesis                   (exact integer arithmetic: prior.py)
            for each channel group of y:
              anchors:     (μ, table) from the hyperprior and the earlier groups' ŷ,
                           s = round(y − μ)       (coded against the table's zero-mean Gaussian)
              non-anchors: (μ, table) refined from the group's anchors, then s = round(y − μ)
decompress: z → the same passes, decoding each s and forming ŷ = s + μ
            → synthesis · inverse gain → crop → pixels

The prior is the only computation that encoder and decoder must agree on exactly, since it
selects the coding tables; it runs in integers, so it is the same on every machine. The big
transforms may differ slightly between machines: that moves pixels by a level or so, never the
entropy decoder.
"""

import zlib

import numpy as np
import torch

from . import entropy, images, weights
from .bitstream import MAX_PIXELS, STRIDE, Bitstream, quality_code
from .errors import CodecError
from .model import Y_CELL, Z_CELL, anchors, group_bounds
from .tiles import by_tiles

DEFAULT_QUALITY = 75


def analyse(codec, rgb, quality):
    """An H×W×3 uint8 image → (y as a float64 tensor, the integer hyper-latent z)."""
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -height % STRIDE), (0, -width % STRIDE), (0, 0)), mode="edge")
    gain, _ = codec.model.gains(codec.model.position(quality))

    def analysis(tile):
        return codec.model.analysis(tile.float().div_(255)) * gain

    with torch.no_grad():
        y = by_tiles(analysis, torch.from_numpy(padded).permute(2, 0, 1)[None], Y_CELL, 1, Y_CELL)
        z = by_tiles(codec.model.hyper_analysis, y, Z_CELL // Y_CELL, 1, Z_CELL)
    return y.double(), torch.round(z).numpy().astype(np.int64)


def residual_passes(codec, z, residuals):
    """The passes that encoder and decoder share: for each channel group, its anchors, then its
    other elements. `residuals(where, mean, table)` gives s at the elements `where` (a boolean
    array over y) from their means and tables (arrays over y, filled up to the current pass):
    the encoder computes and codes them, the decoder decodes them. Returns (s, μ, table)."""
    prior = codec.prior
    hyper = prior.hyper(z)
    shape = (1, hyper.shape[1] // 2, *hyper.shape[2:])
    s = np.zeros(shape, dtype=np.int64)
    mean = torch.zeros(shape, dtype=torch.float64)
    table = np.zeros(shape, dtype=np.int64)
    mask = anchors(*shape[2:]).numpy()
    bounds = group_bounds(prior.groups)

    def decide(k, params, anchors_only):
        first, end = bounds[k]
        where = np.zeros(shape, dtype=bool)
        where[:, first:end] = mask if anchors_only else ~mask
        mean[:, first:end], table[:, first:end] = prior.split(params)
        s[where] = residuals(where, mean, table)
        return torch.from_numpy(s[:, first:end]) + mean[:, first:end]

    prior.passes(hyper, decide)
    return s, mean, table


def latents(codec, rgb, quality):
    """What the encoder computes for an H×W×3 uint8 image: z, the residuals s = round(y − μ), their
    means μ and tables, and the y section that codes s."""
    y, z = analyse(codec, rgb, quality)
    coder = entropy.Encoder(codec.y_tables)

    def residuals(where, mean, table):
        s = torch.round(y - mean).numpy().astype(np.int64)[where]
        coder.encode(s, table[where])
        return s

    s, mean, table = residual_passes(codec, z, residuals)
    return z, s, mean, table, coder.finish()


def pixels(codec, s, mean, quality, width, height):
    """Synthesis from the residuals and the prior mean → H×W×3 uint8."""
    _, inverse_gain = codec.model.gains(codec.model.position(quality))

    def synthesis(tile):
        x_hat = codec.model.synthesis(tile.float() * inverse_gain)
        return x_hat.clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    with torch.no_grad():
        x_hat = by_tiles(synthesis, torch.from_numpy(s).double() + mean, 1, Y_CELL, Y_CELL)
    return x_hat[0, :, :height, :width].permute(1, 2, 0).numpy()


def _z_tables(z_shape):
    """Table index of every element of z: its channel."""
    channels = np.arange(z_shape[1], dtype=np.int64)[None, :, None, None]
    return np.broadcast_to(channels, z_shape)


def compress(image, quality=DEFAULT_QUALITY, weights_path=None, max_pixels=MAX_PIXELS):
    """Compress a PIL image or H×W[×C] uint8 array to `.vae` bytes. Quality: 1 (smallest) to
    100 (best)."""
    quality = quality_code(quality) / 100
    rgb, alpha, mode = images.split_channels(image, max_pixels)
    codec = weights.load(weights_path)
    z, _, _, _, y_section = latents(codec, rgb, quality)
    alpha_bytes = zlib.compress(alpha.tobytes(), 9) if alpha is not None else b""
    return Bitstream(
        model_id=codec.model_id, width=rgb.shape[1], height=rgb.shape[0], mode=mode,
        quality=quality,
        z=entropy.encode(z, _z_tables(z.shape), codec.z_tables),
        y=y_section,
        alpha=alpha_bytes,
    ).to_bytes()


def decompress(data, weights_path=None, max_pixels=MAX_PIXELS):
    """Decode `.vae` bytes to a PIL image in the mode it was compressed from."""
    stream = Bitstream.from_bytes(data, max_pixels)
    codec = weights.load(weights_path)
    if stream.model_id != codec.model_id:
        raise CodecError(f"made with model {stream.model_id.hex()}, but the loaded weights are "
                         f"{codec.model_id.hex()}; decode with the vaecodec version that made it")
    z_shape = (1, codec.model.n, -(-stream.height // Z_CELL), -(-stream.width // Z_CELL))
    z = entropy.decode(stream.z, _z_tables(z_shape), codec.z_tables)
    y_coder = entropy.Decoder(stream.y, codec.y_tables)
    s, mean, _ = residual_passes(codec, z, lambda where, mean, table: y_coder.decode(table[where]))
    rgb = pixels(codec, s, mean, stream.quality, stream.width, stream.height)
    alpha = _decode_alpha(stream) if "A" in stream.mode else None
    return images.join_channels(rgb, alpha, stream.mode)


def _decode_alpha(stream):
    """The zlib-compressed alpha plane, refusing to inflate beyond its known size."""
    size = stream.width * stream.height
    inflater = zlib.decompressobj()
    try:
        plane = inflater.decompress(stream.alpha, size)
    except zlib.error as error:
        raise CodecError(f"alpha section is corrupt ({error})") from None
    if len(plane) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise CodecError("alpha section is corrupt (wrong size)")
    return np.frombuffer(plane, dtype=np.uint8).reshape(stream.height, stream.width)
