"""What bf16 transforms cost in rate–distortion: Kodak through compress and decompress with the
transforms in bf16 (inner layers; see vaecodec/compute.py) against fp32, per quality.

    python benchmarks/precision.py ../shared/data/kodak
    python benchmarks/precision.py ../shared/data/kodak --levels --qualities 10,50,90

bf16 moves y (so the rate) a little as well as the pixels, so the loss is read at equal rate: the
PSNR of the fp32 curve interpolated (in log-rate) at the bf16 point's rate, minus the bf16 PSNR.
Qualities at the ends of the sweep are compared against the nearest fp32 segment, extrapolated.
"""

import copy

import click
import numpy as np
import torch

from vaecodec import bench, codec, weights
from vaecodec.bitstream import Bitstream
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


def level_differences(images, qualities):
    """How far each precision's decoded pixels are from the synthesis in float64, given the same
    file (made the default way): per precision, the largest difference in levels and the
    fraction of values 1 and 2+ levels off; and the same between the fp32 and bf16 decodes."""
    loaded = weights.load()
    exact = copy.deepcopy(loaded.model).double()
    counts = {name: np.zeros(3) for name in ("fp32", "bf16", "bf16 vs fp32")}
    worst = dict.fromkeys(counts, 0)
    for quality in qualities:
        for _, rgb in images:
            data = codec.compress(rgb, quality, device="cpu")
            stream_quality = Bitstream.from_bytes(data).quality
            _, s, mean, _, _ = codec.latents(loaded, rgb, stream_quality)
            _, inverse_gain = exact.gains(exact.position(stream_quality))
            with torch.no_grad():
                x_hat = exact.synthesis((torch.from_numpy(s).double() + mean) * inverse_gain)
            h, w = rgb.shape[:2]
            reference = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
            decoded = {p: np.asarray(codec.decompress(data, device="cpu", precision=p))
                       .astype(float) for p in ("fp32", "bf16")}
            pairs = {"fp32": (decoded["fp32"], reference), "bf16": (decoded["bf16"], reference),
                     "bf16 vs fp32": (decoded["bf16"], decoded["fp32"])}
            for name, (a, b) in pairs.items():
                off = np.abs(a - b)
                counts[name] += [off.size, np.sum(off == 1), np.sum(off >= 2)]
                worst[name] = max(worst[name], int(off.max()))
    return {name: (worst[name], c[1] / c[0], c[2] / c[0]) for name, c in counts.items()}


@click.command()
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--qualities", default=",".join(map(str, bench.VAECODEC_QUALITIES)),
              show_default=True)
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--levels", is_flag=True, help="Instead: decoded pixels against float64 synthesis.")
def main(images_dir, qualities, max_images, levels):
    """Print a Markdown table of bpp and PSNR, fp32 and bf16, and the loss at equal rate."""
    if not bf16_is_native(pick_device("cpu")):
        print("note: this CPU has no native bf16; bf16 is emulated (slow), the figures still hold")
    images = bench.load_images(images_dir, max_images)
    if levels:
        print(f"Kodak, {len(images)} images, qualities {qualities}\n")
        print("| decode | against | largest difference | values 1 level off | 2 or more |")
        print("|---|---|---:|---:|---:|")
        for name, (worst, one, more) in level_differences(
                images, [float(q) for q in qualities.split(",")]).items():
            decode, _, against = name.partition(" vs ")
            print(f"| {decode} | {against or 'float64'} | {worst} | {one:.4%} | {more:.4%} |")
        return
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
