"""What bf16 transforms cost in rate–distortion: Kodak through compress and decompress with the
transforms in bf16 (inner layers; see vaecodec/compute.py) against fp32, per quality.

    python benchmarks/precision.py ../shared/data/kodak

bf16 moves y (so the rate) a little as well as the pixels, so the loss is read at equal rate: the
PSNR of the fp32 curve interpolated (in log-rate) at the bf16 point's rate, minus the bf16 PSNR.
Qualities at the ends of the sweep are compared against the nearest fp32 segment, extrapolated.
"""

import click
import numpy as np

from vaecodec import bench, codec
from vaecodec.compute import bf16_is_native, pick_device


def curve(images, qualities, precision):
    """Mean (bpp, PSNR) per quality over the images."""
    points = []
    for quality in qualities:
        bpp, psnr = [], []
        for _, rgb in images:
            data = codec.compress(rgb, quality, device="cpu", precision=precision)
            decoded = np.asarray(codec.decompress(data, device="cpu", precision=precision))
            bpp.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
            psnr.append(bench.psnr(rgb, decoded))
        points.append((float(np.mean(bpp)), float(np.mean(psnr))))
    return points


def psnr_at(points, bpp):
    """PSNR of a curve at a rate, linear in log-rate between (or beyond) its nearest points."""
    rates = np.log([p[0] for p in points])
    psnrs = [p[1] for p in points]
    i = int(np.clip(np.searchsorted(rates, np.log(bpp)), 1, len(rates) - 1))
    t = (np.log(bpp) - rates[i - 1]) / (rates[i] - rates[i - 1])
    return psnrs[i - 1] + t * (psnrs[i] - psnrs[i - 1])


@click.command()
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--qualities", default=",".join(map(str, bench.VAECODEC_QUALITIES)),
              show_default=True)
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
def main(images_dir, qualities, max_images):
    """Print a Markdown table of bpp and PSNR, fp32 and bf16, and the loss at equal rate."""
    if not bf16_is_native(pick_device("cpu")):
        print("note: this CPU has no native bf16; bf16 is emulated (slow), the figures still hold")
    images = bench.load_images(images_dir, max_images)
    levels = [float(q) for q in qualities.split(",")]
    fp32, bf16 = curve(images, levels, "fp32"), curve(images, levels, "bf16")
    print(f"Kodak, {len(images)} images\n")
    print("| quality | fp32 bpp | fp32 PSNR | bf16 bpp | bf16 PSNR | PSNR loss at equal rate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for quality, (rate32, psnr32), (rate16, psnr16) in zip(levels, fp32, bf16):
        loss = psnr_at(fp32, rate16) - psnr16
        print(f"| {quality:g} | {rate32:.4f} | {psnr32:.3f} | {rate16:.4f} | {psnr16:.3f} | "
              f"{loss:+.3f} dB |")


if __name__ == "__main__":
    main()
