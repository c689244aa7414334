"""Images in and out: what users hand us (PIL images, arrays, files) becomes an RGB uint8 array
plus an optional alpha plane, and decoded arrays become PIL images in the original mode."""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from .bitstream import MAX_PIXELS, check_size
from .errors import CodecError, ConversionWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".ppm",
                  ".pgm", ".gif")  # what folders are scanned for
_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
EXIF_PREFIX = b"Exif\x00\x00"  # what Pillow keeps before the EXIF in `info` (JPEG's APP1 header)


def split_channels(image, max_pixels=MAX_PIXELS):
    """PIL image or H×W[×C] uint8 array → (rgb H×W×3 uint8, alpha H×W uint8 or None, mode,
    metadata: the ICC profile and EXIF as keyword arguments of `Bitstream`).

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
    image = ImageOps.exif_transpose(image)  # also drops the orientation tag from its EXIF
    exif = image.info.get("exif", b"")
    metadata = {"icc_profile": image.info.get("icc_profile") or b"",
                "exif": exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif}
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


def join_channels(rgb, alpha, mode, icc_profile=b"", exif=b""):
    """Inverse of `split_channels`: a PIL image in `mode`, its metadata in `info` as Pillow's
    decoders put it (EXIF behind JPEG's `Exif\\0\\0`)."""
    image = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    if exif:
        image.info["exif"] = EXIF_PREFIX + exif
    return image


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


def encode_image(image, extension):
    """Encode a PIL image for a file with this extension (e.g. '.png'); PNG when empty."""
    extension = extension.lower() or ".png"
    # Pillow's common formats first: registering every plugin takes 80 ms once torch is loaded.
    Image.preinit()
    fmt = Image.EXTENSION.get(extension) or Image.registered_extensions().get(extension)
    if fmt is None or fmt not in Image.SAVE:
        raise CodecError(f"cannot write images with extension '{extension}'")
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
        warnings.warn("JPEG has no alpha channel: alpha dropped", ConversionWarning, stacklevel=2)
    options = {key: image.info[key] for key in ("icc_profile", "exif") if key in image.info}
    if fmt == "PNG":
        # zlib level 3 rather than Pillow's 6: a third of the time (0.12 → 0.04 s for a Kodak
        # image, most of what a decompress spends beyond decoding) for 1.8 % larger files.
        options["compress_level"] = 3
    out = io.BytesIO()
    try:
        image.save(out, format=fmt, **options)
    except Exception as error:
        raise CodecError(f"cannot write {fmt}: {error}") from None
    return out.getvalue()
