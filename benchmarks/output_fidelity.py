"""What decompressing into a lossy format costs: the PSNR of `.vae` decodes against the originals,
and again after each decode is written as JPEG, WebP or AVIF (`images.encode_image`, as
`vaecodec decompress -o x.jpg` writes it), at vaecodec's settings and at Pillow's own defaults;
mean PSNR over the images (dB) and bytes per image.

    python benchmarks/output_fidelity.py ../shared/data/kodak --quality 75
"""

import io

import click
import numpy as np
from PIL import Image

import vaecodec
from vaecodec.bench import load_images, psnr
from vaecodec.images import OUTPUT_QUALITY, encode_image

# Pillow's save with no options: JPEG 75 (4:2:0), WebP 80, AVIF 75 (4:2:0). Lossy WebP is always
# 4:2:0.
PILLOW_DEFAULTS = ("JPEG", "WEBP", "AVIF")


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--quality", default=75, show_default=True, help="vaecodec's compress quality.")
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
def main(folder, quality, max_images):
    rows = {}  # (written as, settings) → (PSNR, bytes) per image

    def read(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    for _, original in load_images(folder, max_images):
        data = vaecodec.compress(original, quality=quality)
        decoded = vaecodec.decompress(data)
        rows.setdefault((".vae", f"quality {quality}"), []).append(
            (psnr(original, np.asarray(decoded)), len(data)))
        for extension, colour in ((".jpg", ", 4:4:4"), (".webp", ""), (".avif", ", 4:4:4")):
            data = encode_image(decoded, extension)
            rows.setdefault((extension, f"vaecodec's: {OUTPUT_QUALITY}{colour}"), []).append(
                (psnr(original, read(data)), len(data)))
        for fmt in PILLOW_DEFAULTS:
            out = io.BytesIO()
            decoded.save(out, fmt)
            rows.setdefault((fmt.lower(), "Pillow's defaults"), []).append(
                (psnr(original, read(out.getvalue())), len(out.getvalue())))
    click.echo("| written as | settings | PSNR dB | bytes per image |\n|---|---|---:|---:|")
    for (written, settings), values in rows.items():
        mean_psnr, mean_bytes = np.mean(values, axis=0)
        click.echo(f"| {written} | {settings} | {mean_psnr:.2f} | {mean_bytes:.0f} |")


if __name__ == "__main__":
    main()
