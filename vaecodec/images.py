"""Images in and out: what users hand us (PIL images, arrays, files) becomes an RGB uint8 array
plus an optional alpha plane, and decoded arrays become PIL images in the original mode."""

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin

from .bitstream import MAX_PIXELS, METADATA, check_size
from .errors import CodecError, ConversionWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".ppm",
                  ".pgm", ".gif")  # what folders are scanned for
_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
EXIF_PREFIX = b"Exif\x00\x00"  # what Pillow keeps before the EXIF in `info` (JPEG's APP1 header)
# What a JPEG's XMP segment holds: an APP1 of at most 65 535 bytes, less its length and
# "http://ns.adobe.com/xap/1.0/\0" (larger packets go in "extended XMP", which Pillow neither
# reads nor writes).
JPEG_MAX_XMP = 65504
# How the lossy formats are written: colour at full resolution (4:4:4), as the codec keeps it,
# where the format can (lossy WebP cannot); AVIF at libaom's speed 6, where the training pack's
# figures were measured (train.py).
LOSSY_OPTIONS = {"JPEG": {"subsampling": 0}, "WEBP": {}, "AVIF": {"subsampling": "4:4:4",
                                                                  "speed": 6}}
# What decoded images are written as: raster formats that hold them as they are (GIF in a palette,
# with a note), not documents (PDF, EPS), icons that resize them, nor .vae again.
WRITTEN = ("PNG", "JPEG", "WEBP", "AVIF", "TIFF", "BMP", "PPM", "JPEG2000", "TGA", "QOI", "GIF")
# Their default quality. On Kodak decodes at quality 75 (34.40 dB), Pillow's defaults took 1.94 dB
# off as JPEG, 1.44 as WebP, 0.81 as AVIF; these settings 0.64, 0.66 and 0.31
# (benchmarks/output_fidelity.py).
OUTPUT_QUALITY = 90


def split_channels(image, max_pixels=MAX_PIXELS):
    """PIL image or H×W[×C] uint8 array → (rgb H×W×3 uint8, alpha H×W uint8 or None, mode,
    metadata: the ICC profile, EXIF and XMP as keyword arguments of `Bitstream`).

    Modes other than L, LA, RGB and RGBA are converted (palette, 16-bit, CMYK … → RGB, or RGBA
    where they carry transparency) with a warning, since the codec stores only those four.
    """
    metadata = {}
    if isinstance(image, Image.Image):
        check_size(*image.size, max_pixels)  # before anything is converted or loaded
        array, mode, metadata = _from_pil(image)
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise CodecError(f"image arrays must be uint8, got {array.dtype}")
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in _ARRAY_MODES:
            raise CodecError(f"image arrays must be H×W or H×W×C with C in 1..4, got {array.shape}")
        mode = _ARRAY_MODES[array.shape[2]]
    if array.ndim == 2:  # PIL's L images
        array = array[:, :, None]
    check_size(array.shape[1], array.shape[0], max_pixels)
    color = array[:, :, :3] if array.shape[2] >= 3 else np.repeat(array[:, :, :1], 3, axis=2)
    alpha = array[:, :, -1] if mode.endswith("A") else None
    return np.ascontiguousarray(color), alpha, mode, metadata


def _from_pil(image):
    if not isinstance(image.info.get("xmp", b""), bytes):  # Pillow's own code expects bytes
        raise CodecError("XMP must be bytes (a UTF-8 packet), as Pillow reads it")
    frames = _frames(image)
    if frames > 1:
        which = "the first" if image.tell() == 0 else f"frame {image.tell() + 1}"
        warnings.warn(f"only {which} of {frames} frames kept", ConversionWarning, stacklevel=3)
    image = ImageOps.exif_transpose(image)  # also drops the orientation from its EXIF and XMP
    exif = image.info.get("exif", b"")
    metadata = {"icc_profile": image.info.get("icc_profile") or b"",
                "exif": exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif,
                "xmp": image.info.get("xmp") or b""}
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA") and "transparency" not in image.info:
        return np.asarray(image), mode, metadata
    try:
        if mode.startswith("I;16") or mode == "I":
            wide = np.asarray(image.convert("I")).astype(np.float64)
            target = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
            image = Image.fromarray(target, "L").convert("RGB")
        elif "transparency" in image.info or mode in ("PA", "La"):
            image = image.convert("LA" if mode in ("L", "La") else "RGBA")
        else:
            image = image.convert("RGB")
    except Exception as error:
        raise CodecError(f"cannot convert a {mode} image ({error})") from None
    warnings.warn(f"converted {mode} image to {image.mode}", ConversionWarning, stacklevel=3)
    return np.asarray(image), image.mode, metadata


def _frames(image):
    """How many frames an animation (GIF, PNG, WebP …) or a multi-page file (TIFF …) has; 1 for
    a camera's MPO, whose frames are previews, and a PSD, whose frames are layers, and where
    counting fails (a damaged later frame, a closed file): the frame at hand is all the codec
    reads."""
    if image.format in ("MPO", "PSD"):
        return 1
    try:
        return image.n_frames
    except Exception:
        return 1


def join_channels(rgb, alpha, mode, metadata):
    """Inverse of `split_channels`: a PIL image in `mode`, with `metadata` in its `info`."""
    image = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    image.info.update(pillow_info(metadata))
    return image


def pillow_info(metadata):
    """Bitstream's metadata → the entries of a PIL image's `info`, as Pillow's decoders make
    them (EXIF behind JPEG's `Exif\\0\\0`)."""
    info = {key: value for key, value in metadata.items() if value}
    if "exif" in info:
        info["exif"] = EXIF_PREFIX + info["exif"]
    return info


def read_image(data, max_pixels=MAX_PIXELS):
    """Decode image file bytes with Pillow, fully, so that truncated files fail here; the size is
    checked against `max_pixels` from the header, before the pixels are allocated."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # ours, checked below from the header, replaces Pillow's
    try:
        image = Image.open(io.BytesIO(data))
        check_size(*image.size, max_pixels)
        image.load()
        return image
    except CodecError:
        raise
    except Image.UnidentifiedImageError:  # Pillow's message names an in-memory buffer
        raise CodecError("not a readable image (unknown format)") from None
    except Exception as error:
        raise CodecError(f"not a readable image ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def writer(extension):
    """The Pillow format that writes files with this extension (e.g. '.png'; PNG when empty)."""
    extension = extension.lower() or ".png"
    # Pillow's common formats first: registering every plugin takes 80 ms once torch is loaded.
    Image.preinit()
    fmt = Image.EXTENSION.get(extension) or Image.registered_extensions().get(extension)
    if fmt not in WRITTEN or fmt not in Image.SAVE:
        raise CodecError(f"cannot write images with extension '{extension}' (write PNG, JPEG, "
                         "WebP, AVIF, TIFF, BMP, PPM, JPEG 2000, TGA, QOI or GIF)")
    return fmt


def encode_image(image, extension, quality=OUTPUT_QUALITY):
    """Encode a PIL image for a file with this extension (e.g. '.png'; PNG when empty), JPEG,
    WebP and AVIF at `quality`."""
    fmt = writer(extension)
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
        warnings.warn("JPEG has no alpha channel: alpha dropped", ConversionWarning, stacklevel=2)
    if fmt == "GIF" and image.mode != "L":
        losses = [*(["GIF holds 256 colours: reduced to a palette"] if "RGB" in image.mode
                    else []),
                  *(["GIF's transparency is all or nothing"] if "A" in image.mode else [])]
        warnings.warn("; ".join(losses), ConversionWarning, stacklevel=2)
    options = {key: image.info[key] for key in METADATA if image.info.get(key)}
    if fmt in LOSSY_OPTIONS:
        options.update(LOSSY_OPTIONS[fmt], quality=quality)
    if fmt == "PNG":
        # zlib level 3 rather than Pillow's 6: a third of the time (0.12 → 0.04 s for a Kodak
        # image, most of what a decompress spends beyond decoding) for 1.8 % larger files.
        options["compress_level"] = 3
    out = io.BytesIO()
    try:
        if "xmp" in options:  # inside: a damaged EXIF that TIFF's tags are read from fails here
            options.update(_xmp_options(fmt, options.pop("xmp"), options.get("exif")))
        image.save(out, format=fmt, **options)
    except Exception as error:
        raise CodecError(f"cannot write {fmt}: {error}") from None
    return out.getvalue()


def _xmp_options(fmt, xmp, exif):
    """The keyword arguments of Pillow's `save` that write the XMP packet `xmp` in format `fmt`
    (JPEG, WebP and AVIF take `xmp`; formats that hold no XMP, such as BMP, GIF and PPM, leave it
    out as they leave out the ICC profile and EXIF); `exif` is the EXIF being written."""
    if fmt == "PNG":  # an iTXt chunk, which holds UTF-8 text
        try:
            text = xmp.decode()
        except UnicodeDecodeError:
            warnings.warn("XMP dropped: PNG holds it only as UTF-8 text", ConversionWarning,
                          stacklevel=2)
            return {}
        chunks = PngImagePlugin.PngInfo()
        chunks.add_itxt("XML:com.adobe.xmp", text)
        return {"pnginfo": chunks}
    if fmt == "TIFF":  # a tag of the image's IFD, where the EXIF tags go too
        tags = Image.Exif()
        if exif:
            tags.load(exif)
        tags[ExifTags.Base.XMLPacket] = xmp
        return {"exif": tags}
    if fmt == "JPEG" and len(xmp) > JPEG_MAX_XMP:
        warnings.warn(f"XMP dropped: {len(xmp)} bytes, where a JPEG holds {JPEG_MAX_XMP}",
                      ConversionWarning, stacklevel=2)
        return {}
    return {"xmp": xmp}
