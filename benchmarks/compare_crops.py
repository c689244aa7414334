"""The README's side-by-side crops: vaecodec against WebP and AVIF at the same bytes.

    python benchmarks/compare_crops.py ../shared/data/kodak/kodim23.png \\
        -o benchmarks/results/compare

For each vaecodec quality (a low and a mid one), WebP and AVIF (the bench's settings) get the
highest quality whose file is no larger than vaecodec's, and one picture shows the same crop of
the original and the three decoded images, captioned with bpp, PSNR and MS-SSIM of the whole
image (vaecodec.compare's captions).
"""

from pathlib import Path

import click
import numpy as np
from PIL import Image

from vaecodec import bench, codec
from vaecodec.compare import caption, describe, parse_crop, row, scores

QUALITIES = {"low": 15, "mid": 50}


def at_most(name, rgb, budget):
    """The highest integer quality of a classical codec whose file fits in `budget` bytes →
    (file bytes, decoded array); its lowest quality when none fits."""
    _, encode, decode = bench._classical(name)
    low, high, best = 0, 100, None
    while low <= high:
        quality = (low + high) // 2
        data = bytes(encode(rgb, quality))
        if len(data) <= budget:
            best, low = data, quality + 1
        else:
            high = quality - 1
    best = best or bytes(encode(rgb, 0))
    return best, decode(best)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True)
@click.option("--crop", default="430,84,160,120", show_default=True, help="x,y,w,h")
def main(image, output, crop):
    """Write OUTPUT/NAME-low.png and NAME-mid.png."""
    rgb = np.asarray(Image.open(image).convert("RGB"))
    box = parse_crop(crop, (rgb.shape[1], rgb.shape[0]))
    Path(output).mkdir(parents=True, exist_ok=True)
    for level, quality in QUALITIES.items():
        data = codec.compress(rgb, quality)
        results = [(f"vaecodec q{quality}", data, np.asarray(codec.decompress(data)))]
        results += [(name, *at_most(name.lower(), rgb, len(data))) for name in ("WebP", "AVIF")]
        panels = [caption(Image.fromarray(rgb).crop(box), "original")]
        panels += [caption(Image.fromarray(decoded).crop(box),
                           f"{name}\n" + describe(*scores(rgb, decoded, len(file))))
                   for name, file, decoded in results]
        target = Path(output) / f"{Path(image).stem}-{level}.png"
        row(panels).save(target, optimize=True)
        print(target, ", ".join(f"{name} {len(file)} bytes" for name, file, _ in results))


if __name__ == "__main__":
    main()
