"""Side-by-side pictures: the original, a decoded file and their error, labelled with the file's
bit rate and the decoded image's PSNR and MS-SSIM (over the whole image, whatever is shown)."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .bench import ms_ssim, psnr
from .errors import CodecError

ERROR_GAIN = 4  # the error map shows |original − decoded| times this, averaged over channels
CAPTION_PX = 16  # caption font size
_MARGIN = 6


def parse_crop(text, size):
    """'x,y,w,h' → a box (left, top, right, bottom) inside an image of `size`."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise CodecError(f"crop must be x,y,w,h in pixels, got {text!r}") from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > size[0] or y + h > size[1]:
        raise CodecError(f"crop {text} does not fit in the {size[0]}×{size[1]} image")
    return x, y, x + w, y + h


def caption(image, text):
    """`image` with `text` written in a strip below it."""
    font = ImageFont.load_default(size=CAPTION_PX)
    lines = text.split("\n")
    strip = len(lines) * (CAPTION_PX + 4) + 2 * _MARGIN
    framed = Image.new("RGB", (image.width, image.height + strip), "white")
    framed.paste(image.convert("RGB"))
    ImageDraw.Draw(framed).multiline_text((_MARGIN, image.height + _MARGIN), text, fill="black",
                                          font=font, spacing=4)
    return framed


def row(panels):
    """Captioned panels side by side, with a white gap between them."""
    height = max(p.height for p in panels)
    out = Image.new("RGB", (sum(p.width for p in panels) + _MARGIN * (len(panels) - 1), height),
                    "white")
    left = 0
    for panel in panels:
        out.paste(panel, (left, 0))
        left += panel.width + _MARGIN
    return out


def scores(original, decoded, file_bytes):
    """bpp of the file, PSNR and MS-SSIM (None when the image is too small) of two RGB arrays."""
    height, width = original.shape[:2]
    return 8 * file_bytes / (width * height), psnr(original, decoded), ms_ssim(original, decoded)


def describe(bpp, psnr_db, ms_ssim_score):
    msssim = "n/a" if ms_ssim_score is None else f"{ms_ssim_score:.4f}"
    return f"{bpp:.3f} bpp\nPSNR {psnr_db:.2f} dB\nMS-SSIM {msssim}"


def side_by_side(original, decoded, file_bytes, name, crop=None):
    """Original | decoded | error map (PIL images of the same size) → one captioned image.
    `crop` is a box (left, top, right, bottom) to show instead of the whole image."""
    if original.size != decoded.size:
        raise CodecError(f"the images differ in size ({original.width}×{original.height} and "
                         f"{decoded.width}×{decoded.height})")
    reference = np.asarray(original.convert("RGB"))
    result = np.asarray(decoded.convert("RGB"))
    error = np.abs(reference.astype(np.int16) - result).mean(axis=2) * ERROR_GAIN
    error_map = Image.fromarray(np.clip(error, 0, 255).astype(np.uint8), "L")
    box = crop or (0, 0, *original.size)
    panels = [(original, "original"), (decoded, f"{name}\n" + describe(
        *scores(reference, result, file_bytes))), (error_map, f"error x {ERROR_GAIN}")]
    return row([caption(image.crop(box), text) for image, text in panels])
