"""Images in and out: what users hand us (PIL images, arrays, files) becomes an RGB uint8 array
plus an optional alpha plane, and decoded arrays become PIL images in the original mode."""

import io

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin

from .bitstream import MAX_PIXELS, METADATA, MODES, check_size
from .errors import CodecError, note

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".ppm",
                  ".pgm", ".gif")  # what folders are scanned for
_ARRAY_MODES = dict(enumerate(MODES, start=1))  # by an array's number of channels
# The colour space (bytes 16:20 of its header) of an ICC profile that fits each stored mode.
_PROFILE_SPACES = {"L": b"GRAY", "LA": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB "}
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
# with a note), not documents (PDF, EPS), icons that resize them, nor .vae again; and the stored
# modes each holds as written here (Pillow's BMP keeps no alpha, nor its GIF a grey image's; WebP,
# AVIF at 4:4:4 and QOI keep no grey).
WRITTEN = {"PNG": MODES, "JPEG": ("L", "RGB"), "WEBP": ("RGB", "RGBA"),
           "AVIF": ("RGB", "RGBA"), "TIFF": MODES, "BMP": ("L", "RGB"),
           "PPM": ("L", "RGB"), "JPEG2000": MODES, "TGA": MODES,
           "QOI": ("RGB", "RGBA"), "GIF": ("L", "RGB", "RGBA")}
# Their default quality. On Kodak decodes at quality 75 (34.40 dB), Pillow's defaults took 1.94 dB
# off as JPEG, 1.44 as WebP, 0.81 as AVIF; these settings 0.64, 0.66 and 0.31
# (benchmarks/output_fidelity.py).
OUTPUT_QUALITY = 90


def split_channels(image, max_pixels=MAX_PIXELS):
    """PIL image or H×W[×C] uint8 array → (rgb H×W×3 uint8, alpha H×W uint8 or None, mode,
    metadata: the ICC profile, EXIF and XMP as keyword arguments of `Bitstream`).

    Modes other than L, LA, RGB and RGBA are converted (1-bit, 16-bit … grey → L, palette,
    CMYK … → RGB, or LA/RGBA where they carry transparency) with a warning, since the codec
    stores only those four; so is an ICC profile that no longer fits the pixels (converted or
    dropped).
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
    _loaded(image)
    frames = _frames(image)
    if frames > 1:
        which = "the first" if image.tell() == 0 else f"frame {image.tell() + 1}"
        note(f"only {which} of {frames} frames kept")
    image = ImageOps.exif_transpose(image)  # also drops the orientation from its EXIF and XMP
    exif = image.info.get("exif", b"")
    metadata = {"icc_profile": image.info.get("icc_profile") or b"",
                "exif": exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif,
                "xmp": image.info.get("xmp") or b""}
    image, metadata["icc_profile"] = _stored(image, metadata["icc_profile"])
    return np.asarray(image), image.mode, metadata


def _stored(image, profile):
    """`image` in a mode the codec stores, and its ICC profile where that still fits the pixels,
    with a note for each change."""
    srgb = _srgb(image, profile)
    if srgb is not None:
        note("converted CMYK image to RGB (sRGB, through its ICC profile)")
        return srgb, b""  # sRGB: what an image without a profile is taken to be
    if image.mode in MODES and "transparency" not in image.info:
        return image, _fitting_profile(profile, image.mode)
    converted = _converted(image)
    source = "1-bit" if image.mode == "1" else image.mode  # not "converted 1 image", a count
    note(f"converted {source} image to {converted.mode}")
    return converted, _fitting_profile(profile, converted.mode)


def _srgb(image, profile):
    """A CMYK image converted to sRGB through its CMYK ICC profile, as colour-managed viewers show
    it (Pillow's own conversion ignores the profile); None for other images, and where littlecms
    cannot use the profile."""
    if image.mode != "CMYK" or profile[16:20] != b"CMYK":
        return None
    from PIL import ImageCms  # littlecms: loaded for the images that need it

    try:
        return ImageCms.profileToProfile(image, io.BytesIO(profile),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except ImageCms.PyCMSError:
        return None


def _converted(image):
    """`image` in the stored mode nearest its own: grey (1-bit, 16-bit, float) as L, colour
    (palette, CMYK …) as RGB, either with alpha (LA, RGBA) where it carries transparency."""
    colour = "L" if image.mode in ("1", "L", "LA", "La", "F") else "RGB"
    alpha = "transparency" in image.info or image.getbands()[-1] in ("A", "a")
    try:
        if image.mode.startswith("I"):  # 16-bit (I;16 …) or 32-bit integers
            return _eight_bit(image)
        return image.convert(colour + ("A" if alpha else ""))
    except Exception as error:
        raise CodecError(f"cannot convert a {image.mode} image ({error})") from None


def _eight_bit(image):
    """A 16-bit grey image as L, scaled (Pillow's conversion clips at 255), and LA where a PNG
    transparency key (tRNS) marks the pixels of one value as transparent."""
    wide = np.asarray(image.convert("I"))
    grey = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if isinstance(key, int):
        grey.putalpha(Image.fromarray(np.where(wide == key, 0, 255).astype(np.uint8), "L"))
    return grey


def _fitting_profile(profile, mode):
    """`profile` where it describes the colour space of an image in `mode`, else b"" with a note:
    colour-managed viewers fail on a profile for other pixels, or show wrong colours."""
    space = profile[16:20]
    if not profile or space == _PROFILE_SPACES[mode]:
        return profile
    name = space.strip().decode() if space.strip().isalnum() else "unreadable"
    note(f"ICC profile dropped: its colour space ({name}) does not fit an {mode} image")
    return b""


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


def delivered_colours(rgb, mode):
    """The colour channels of a decoded image as `join_channels` delivers them: `rgb` itself, or
    for the grey modes (L, LA) Pillow's grey of it, which a PSNR target must measure: a grey
    image's RGB reconstruction is noisier than the grey it averages to (0.2-0.8 dB)."""
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L")) if mode in ("L", "LA") else rgb


def join_channels(rgb, alpha, mode, metadata):
    """Inverse of `split_channels`: a PIL image in `mode`, with `metadata` in its `info`."""
    image = Image.fromarray(delivered_colours(rgb, mode))
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
    checked against `max_pixels` from the header, before the pixels are allocated. Pillow's own
    limit (Image.MAX_IMAGE_PIXELS, the process's) still applies: it is not ours to lift."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:  # Pillow's message names an in-memory buffer
        raise CodecError("not a readable image (unknown format)") from None
    except Image.DecompressionBombError:
        raise CodecError(_over_pillows_limit(max_pixels)) from None
    except Exception as error:
        raise CodecError(f"not a readable image ({error})") from None
    check_size(*image.size, max_pixels)
    return _loaded(image)


def _over_pillows_limit(max_pixels):
    """Why an image that Pillow refuses (over twice Image.MAX_IMAGE_PIXELS) is not read: it is over
    `max_pixels` too, or over Pillow's limit alone."""
    pillows = 2 * Image.MAX_IMAGE_PIXELS
    if max_pixels < pillows:
        return f"image exceeds the limit of {max_pixels} pixels"
    return f"image exceeds Pillow's limit of {pillows} pixels (PIL.Image.MAX_IMAGE_PIXELS)"


def _loaded(image):
    """`image` with its pixels read: Pillow reads a file's lazily, so a truncated or damaged one
    fails here, as a CodecError."""
    try:
        image.load()
    except Exception as error:
        raise CodecError(f"not a readable image ({error})") from None
    return image


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
    if fmt == "GIF" and image.mode != "L":
        losses = [*(["GIF holds 256 colours: reduced to a palette"] if "RGB" in image.mode
                    else []),
                  *(["GIF's transparency is all or nothing"] if "A" in image.mode else [])]
        note("; ".join(losses))
    image = _writable(image, fmt)
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


def _writable(image, fmt):
    """`image` in a mode that `fmt` holds: grey as colour where it holds no grey, without alpha
    where it holds no alpha (a note says so)."""
    mode = _written_mode(image.mode, WRITTEN[fmt])
    if image.mode.endswith("A") and not mode.endswith("A"):
        note(f"{fmt} has no alpha channel: alpha dropped")
    if mode == image.mode:
        return image
    written = image.convert(mode)  # grey as colour: a grey ICC profile no longer fits
    written.info["icc_profile"] = _fitting_profile(image.info.get("icc_profile") or b"", mode)
    return written


def _written_mode(mode, held):
    """The first of the modes `held` that an image in `mode` can be written in: its own, in colour
    (grey as RGB), without alpha, or both; its own where none is (not a stored mode)."""
    colour, opaque = mode.replace("L", "RGB"), mode.removesuffix("A")
    return next((written for written in (mode, colour, opaque, opaque.replace("L", "RGB"))
                 if written in held), mode)


def _xmp_options(fmt, xmp, exif):
    """The keyword arguments of Pillow's `save` that write the XMP packet `xmp` in format `fmt`
    (JPEG, WebP and AVIF take `xmp`; formats that hold no XMP, such as BMP, GIF and PPM, leave it
    out as they leave out the ICC profile and EXIF); `exif` is the EXIF being written."""
    if fmt == "PNG":  # an iTXt chunk, which holds UTF-8 text
        try:
            text = xmp.decode()
        except UnicodeDecodeError:
            note("XMP dropped: PNG holds it only as UTF-8 text")
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
        note(f"XMP dropped: {len(xmp)} bytes, where a JPEG holds {JPEG_MAX_XMP}")
        return {}
    return {"xmp": xmp}
