"""Image ⇄ bitstream: the data flow of the codec, top to bottom.

compress:   pixels → pad to a multiple of STRIDE → analysis · gain → y
            y → hyper_analysis → round → z        (coded against the factorized prior)
            y, z → refine → y                     (effort > 0 only: refine.py)
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

import os
import zlib
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from . import compute, entropy, files, images, rate, refine, tiles, weights
from .bench import psnr
from .bitstream import MAX_METADATA, MAX_PIXELS, STRIDE, Bitstream, quality_code
from .errors import CodecError
from .model import Y_CELL, Z_CELL, anchors, group_bounds
from .tiles import by_tiles

DEFAULT_QUALITY = 75


def analyse(codec, source, transforms=None):
    """`padded`'s uint8 [1, 3, H', W'] → the analysis transform's output before the gain
    (float32). It does not depend on the quality, so rate control computes it once and tries
    qualities on it."""
    transforms = transforms or compute.transforms(codec.model)
    with torch.no_grad():
        return by_tiles(transforms.analysis, source, Y_CELL, 1, Y_CELL,
                        tile_pixels=tiles.tile_side(*source.shape[2:]))


def padded(rgb):
    """An H×W×3 uint8 image → uint8 [1, 3, H', W'], its edges repeated up to a multiple of
    STRIDE."""
    height, width = rgb.shape[:2]
    rgb = np.pad(rgb, ((0, -height % STRIDE), (0, -width % STRIDE), (0, 0)), mode="edge")
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def at_quality(codec, features, quality, in_place=False):
    """The analysis output scaled by the quality's gain → (y as a float32 tensor, the integer
    hyper-latent z); `in_place` scales `features` itself, at its last use (one copy fewer)."""
    gain, _ = codec.model.gains(codec.model.position(quality))
    with torch.no_grad():
        y = features.mul_(gain) if in_place else features * gain
        z = by_tiles(codec.model.hyper_analysis, y, Z_CELL // Y_CELL, 1, Z_CELL)
    return y, torch.round(z).numpy().astype(np.int64)


def residual_passes(codec, z, residuals, device=torch.device("cpu"), keep=False):
    """The passes that encoder and decoder share: for each channel group, its anchors, then its
    other elements. `residuals(group, where, mean, table)` gives s at the elements `where` (a
    boolean array over the channels `group`, a slice of y's) from their means and tables
    (arrays over the same channels; `mean` is read during the call only: ŷ is formed in it
    afterwards): the encoder computes and codes them, the decoder decodes them. The prior's
    networks run on `device`, the coding on the CPU.

    Returns (ŷ = s + μ as one float64 tensor per channel group on `device`, None), or with
    `keep` (ŷ, (s, μ, table)): arrays over all of y, for checks. The context holds ŷ anyway, so
    coding holds nothing else over all of y (μ alone would take 240 MB for a 24 MP image with
    M = 320)."""
    prior = codec.prior_on(device)
    cells = Z_CELL // Y_CELL
    shape = (1, codec.model.m, z.shape[2] * cells, z.shape[3] * cells)
    mask = anchors(*shape[2:]).numpy()
    bounds = group_bounds(prior.groups)
    anchor_s = None  # the current group's anchors, decoded in its first pass
    kept = (np.zeros(shape, dtype=np.int32), torch.zeros(shape, dtype=torch.float64),
            np.zeros(shape, dtype=np.uint8)) if keep else None

    def decide(k, params, anchors_only):
        nonlocal anchor_s
        group = slice(*bounds[k])
        mean, table = prior.split(params)
        at_anchors = np.broadcast_to(mask, mean.shape)
        where = at_anchors if anchors_only else ~at_anchors
        s = residuals(group, where, mean.numpy(), table)
        if keep:
            kept[0][:, group][where] = s
            kept[1][:, group], kept[2][:, group] = mean, table
        y_hat = mean  # ŷ = μ + s, formed in μ: split gave a new tensor
        if anchors_only:
            anchor_s = s
        else:  # the anchors' μ is final after the first pass: the second gives the same
            y_hat.numpy()[at_anchors] += anchor_s
        y_hat.numpy()[where] += s
        return y_hat

    return prior.passes(prior.hyper(z), decide)[0], kept


def latents(codec, rgb, quality, transforms=None):
    """What the encoder computes for an H×W×3 uint8 image, for checks: z, the residuals
    s = round(y − μ), their means μ and tables (arrays over all of y), and the y section that
    codes s."""
    transforms = transforms or compute.transforms(codec.model)
    y, z = at_quality(codec, analyse(codec, padded(rgb), transforms), quality, in_place=True)
    _, y_section, (s, mean, table) = code_latents(codec, y, z, transforms.device, keep=True)
    return z, s, mean, table, y_section


def code_latents(codec, y, z, device=torch.device("cpu"), keep=False):
    """y and z (from `at_quality`) coded, the prior on `device` → (ŷ per channel group, the y
    section, None or with `keep` the arrays of `residual_passes`)."""
    coder = entropy.Encoder(codec.y_tables)

    def residuals(group, where, mean, table):
        # Only the elements of this pass, rounded in place: no full-size temporaries. float32 y
        # minus float64 μ is computed in float64, exactly as from y in float64.
        s = y.numpy()[:, group][where] - mean[where]
        s = entropy.as_int32(np.rint(s, out=s))
        coder.encode(s, table[where])
        return s

    y_hat, kept = residual_passes(codec, z, residuals, device, keep)
    return y_hat, coder.finish(), kept


def pixels(codec, y_hat, quality, width, height, transforms=None):
    """Synthesis of ŷ (float64 tensors of consecutive channels, one per channel group as
    `residual_passes` gives it) → H×W×3 uint8, tile by tile: a 24 MP image's ŷ is never joined
    whole."""
    transforms = transforms or compute.transforms(codec.model)
    _, inverse_gain = codec.model.gains(codec.model.position(quality))

    def synthesis(*tiles):
        return transforms.synthesis(torch.cat(tiles, dim=1), inverse_gain)

    with torch.no_grad():
        x_hat = by_tiles(synthesis, tuple(y_hat), 1, Y_CELL, Y_CELL)
    return x_hat[0, :, :height, :width].permute(1, 2, 0).numpy()


def z_channel_tables(z_shape):
    """Table index of every element of z: its channel."""
    channels = np.arange(z_shape[1], dtype=np.int64)[None, :, None, None]
    return np.broadcast_to(channels, z_shape)


def compress(image, quality=None, *, target_bpp=None, target_psnr=None, max_bytes=None,
             strict=False, strip=False, effort=0, weights_path=None, max_pixels=MAX_PIXELS,
             device="auto", precision="auto"):
    """Compress a PIL image, an H×W[×C] uint8 array, an image file's bytes (or bytearray) or its
    path to `.vae` bytes.

    Give at most one of: `quality` 1 (smallest) … 100 (best), default 75; `target_bpp` (bits per
    pixel of the file, within 3 %), `target_psnr` (dB over the decoded image's RGB, or its grey,
    within 0.1 dB) or `max_bytes` (at most that, and no more than 5 % below), which search the
    quality (`rate.search`: out of reach, the nearest file and a TargetWarning; with `strict`, a
    CodecError). The ICC profile, EXIF and XMP of a PIL image or a file are kept unless `strip`. `effort` 1 … 3 refines the
    latents for this image (refine.py: smaller files at the same quality, 10·effort gradient
    steps; 0, the default: the analysis transform's latents as they are). The transforms run
    on `device` ('auto': CUDA when available, 'cpu', 'cuda') in `precision` ('auto': bf16 inner
    layers on a CPU that does bf16 natively, 'bf16', 'fp32'), and so does the prior, exactly,
    so that any decoder reads the file to the same latents. The file itself is the same again
    with the same device and precision path (and at an effort, the same machine and threads):
    the analysis is float arithmetic, which may round a few latents the other way elsewhere.
    """
    targets = [rate.Target(kind, value) for kind, value in
               (("bpp", target_bpp), ("psnr", target_psnr), ("bytes", max_bytes))
               if value is not None]
    if len(targets) + (quality is not None) > 1:
        raise CodecError("give at most one of quality, target_bpp, target_psnr and max_bytes")
    if not targets:
        quality = quality_code(DEFAULT_QUALITY if quality is None else quality) / 100
    if isinstance(effort, bool) or not isinstance(effort, Integral) or not (
            0 <= effort <= rate.MAX_EFFORT):
        raise CodecError(f"effort must be an integer from 0 to {rate.MAX_EFFORT}, not {effort!r}")
    effort = int(effort)  # a NumPy integer too
    if isinstance(image, (str, os.PathLike)):
        image = _file_bytes(image)
    if isinstance(image, (bytes, bytearray)):  # decoded here, where nothing else holds it
        image = images.read_image(image, max_pixels)
    rgb, alpha, mode, metadata = images.split_channels(image, max_pixels)
    del image  # copied into rgb: a caller that hands it over holds a large photo once, not twice
    codec = weights.load(weights_path)
    transforms = compute.transforms(codec.model, device, precision)
    padded_rgb = padded(rgb)
    features = analyse(codec, padded_rgb, transforms)
    if not effort:  # otherwise what the refinement compares its decodes with
        padded_rgb = None
    height, width = rgb.shape[:2]
    sections = dict(
        model_id=codec.model_id, width=width, height=height, mode=mode,
        alpha=zlib.compress(alpha.tobytes(), 9) if alpha is not None else b"",
        **({} if strip else metadata))

    def encode(quality, last=False):
        """(file bytes, ŷ) at this quality; `last`: the features are not needed again."""
        nonlocal features, padded_rgb
        y, z = at_quality(codec, features, quality, in_place=last)
        if effort:
            y = refine.refine(transforms, y, z, padded_rgb, width, height, quality, effort)
        if last:  # the coding need not hold them: 132 MB of a 24 MP photo after a refinement
            features = padded_rgb = None
        y_hat, y_section, _ = code_latents(codec, y, z, transforms.device)
        z_section = entropy.encode(z, z_channel_tables(z.shape), codec.z_tables)
        data = Bitstream(quality=quality, z=z_section, y=y_section, **sections).to_bytes()
        return data, y_hat

    if not targets:
        del rgb  # not needed by the coding: 72 MB of a 24 MP photo
        return encode(quality, last=True)[0]
    target, = targets
    reference = images.delivered_colours(rgb, mode)  # rgb's grey, for a grey image

    def probe(quality):
        data, y_hat = encode(quality)
        if target.kind == "bytes":
            return data, len(data)
        if target.kind == "bpp":
            return data, 8 * len(data) / (width * height)
        decoded = pixels(codec, y_hat, quality, width, height, transforms)
        return data, psnr(reference, images.delivered_colours(decoded, mode))

    return rate.search(probe, target, strict)[0]


def decompress(data, weights_path=None, max_pixels=MAX_PIXELS, max_metadata=MAX_METADATA,
               device="auto", precision="auto"):
    """Decode `.vae` bytes (or a `.vae` file's path) to a PIL image in the mode it was compressed
    from, with its ICC profile, EXIF and XMP in `info` (as Pillow's decoders put them); device and
    precision as for `compress`."""
    if isinstance(data, (str, os.PathLike)):
        data = _file_bytes(data)
    return decode(Bitstream.from_bytes(data, max_pixels, max_metadata), weights_path, device,
                  precision)


def decode(stream, weights_path=None, device="auto", precision="auto"):
    """`decompress` of a parsed and checked `Bitstream`. What is cheap to check (the model, the
    alpha plane) is checked before the latents are decoded."""
    codec = weights.load(weights_path)
    if stream.model_id != codec.model_id:
        raise CodecError(f"made with model {stream.model_id.hex()}, but the loaded weights are "
                         f"{codec.model_id.hex()}; decode with the vaecodec version that made it")
    alpha = _decode_alpha(stream) if "A" in stream.mode else None
    transforms = compute.transforms(codec.model, device, precision)
    y_hat = decoded_latents(codec, stream, transforms.device)
    rgb = pixels(codec, y_hat, stream.quality, stream.width, stream.height, transforms)
    return images.join_channels(rgb, alpha, stream.mode, stream.metadata())


def decoded_latents(codec, stream, device=torch.device("cpu")):
    """The latents a file holds: ŷ, one float64 tensor per channel group (as `residual_passes`
    gives them), the prior run on `device`. The same on every machine."""
    z_shape = (1, codec.model.n, -(-stream.height // Z_CELL), -(-stream.width // Z_CELL))
    z = entropy.decode(stream.z, z_channel_tables(z_shape), codec.z_tables)
    y_coder = entropy.Decoder(stream.y, codec.y_tables)
    return residual_passes(codec, z, lambda group, where, mean, table: y_coder.decode(
        table[where]), device)[0]


def _file_bytes(path):
    """The bytes of the file at `path`, or a CodecError that names it and says why not."""
    try:
        return files.read(Path(path))
    except files.Failed as error:
        raise CodecError(f"{path}: {error}") from None


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
