"""Learning curve: Kodak BD-rate of vaecodec against WebP for a series of training checkpoints.

    python benchmarks/learning_curve.py ../shared/data/kodak ckpt/snap-*.ckpt --max-images 6

Each checkpoint's EMA weights are exported to a temporary weights file (a weights file is taken
as it is; it holds no step count) and measured like `vaecodec bench` does (same code), against
WebP measured once in the same run.
"""

import os
import tempfile
from pathlib import Path

import click
import torch

from vaecodec import bench
from vaecodec.train import export_checkpoint


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--max-images", default=6, show_default=True)
@click.option("--qualities", default="1,20,40,60,80,100", show_default=True)
def main(images, checkpoints, max_images, qualities):
    """Print step, BD-rate vs WebP (PSNR) and the RD points of each checkpoint or weights file."""
    data = bench.load_images(images, max_images)
    webp = bench.mean_curve(bench.measure(data, ["webp"])["webp"])
    levels = [float(q) for q in qualities.split(",")]
    print("| checkpoint | step | BD-rate vs WebP | (bpp, PSNR) per quality |\n|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for checkpoint in checkpoints:
            path, step = checkpoint, "n/a"
            if "ema" in torch.load(checkpoint, map_location="cpu", weights_only=True):
                path = Path(tmp) / f"{Path(checkpoint).stem}.pt"
                step = export_checkpoint(checkpoint, path)
            os.environ["VAECODEC_WEIGHTS"] = str(path)
            ours = bench.mean_curve(bench.measure(data, ["vaecodec"], levels)["vaecodec"])
            rate = bench.bd_rate([p["bpp"] for p in webp], [p["psnr"] for p in webp],
                                 [p["bpp"] for p in ours], [p["psnr"] for p in ours])
            points = ", ".join(f"({p['bpp']:.3f}, {p['psnr']:.2f})" for p in ours)
            shown = "n/a" if rate is None else f"{rate:+.1f} %"
            print(f"| {Path(checkpoint).name} | {step} | {shown} | {points} |", flush=True)


if __name__ == "__main__":
    main()
