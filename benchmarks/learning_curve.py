"""Learning curve: Kodak BD-rate of vaecodec against a classical codec for a series of training
checkpoints or weights files.

    python benchmarks/learning_curve.py ../shared/data/kodak ckpt/snap-*.ckpt --max-images 6
    python benchmarks/learning_curve.py ../shared/data/kodak weights/candidate.pt --peer avif \
        --train-images .pack

Each checkpoint's EMA weights are exported to a temporary weights file (a weights file is taken
as it is; it holds no step count) and measured like `vaecodec bench` does (same code), against
the peer measured once in the same run. With --train-images the same is measured on that many
training photos too: a model that gains there but not on Kodak is overfitting its training set.
"""

import os
import tempfile
from pathlib import Path

import click
import torch

from vaecodec import bench
from vaecodec.train import export_checkpoint


def bd_rate_against(peer, images, levels):
    """BD-rate (PSNR) of the weights in VAECODEC_WEIGHTS against `peer`'s curve, and its points."""
    ours = bench.mean_curve(bench.measure(images, ["vaecodec"], levels)["vaecodec"])
    rate = bench.bd_rate([p["bpp"] for p in peer], [p["psnr"] for p in peer],
                         [p["bpp"] for p in ours], [p["psnr"] for p in ours])
    return rate, ours


def shown(rate):
    return "n/a" if rate is None else f"{rate:+.1f} %"


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--max-images", default=6, show_default=True)
@click.option("--qualities", default="1,20,40,60,80,100", show_default=True)
@click.option("--peer", type=click.Choice(["webp", "avif", "jpeg", "jpegxl"]), default="webp",
              show_default=True)
@click.option("--train-images", type=click.Path(exists=True, file_okay=False),
              help="Also measure on the first --max-images photos of this training folder.")
def main(images, checkpoints, max_images, qualities, peer, train_images):
    """Print step, BD-rate vs the peer (PSNR) and the RD points of each checkpoint or weights
    file."""
    sets = {"Kodak": bench.load_images(images, max_images)}
    if train_images:
        sets["training"] = bench.load_images(train_images, max_images)
    curves = {name: bench.mean_curve(bench.measure(data, [peer])[peer])
              for name, data in sets.items()}
    levels = [float(q) for q in qualities.split(",")]
    columns = " | ".join(f"BD-rate vs {peer} ({name})" for name in sets)
    print(f"| checkpoint | step | {columns} | (bpp, PSNR) per quality on Kodak |\n"
          f"|---|---:|{'---:|' * len(sets)}---|")
    with tempfile.TemporaryDirectory() as tmp:
        for checkpoint in checkpoints:
            path, step = checkpoint, "n/a"
            if "ema" in torch.load(checkpoint, map_location="cpu", weights_only=True):
                path = Path(tmp) / f"{Path(checkpoint).stem}.pt"
                step = export_checkpoint(checkpoint, path)
            os.environ["VAECODEC_WEIGHTS"] = str(path)
            results = {name: bd_rate_against(curves[name], data, levels)
                       for name, data in sets.items()}
            points = ", ".join(f"({p['bpp']:.3f}, {p['psnr']:.2f})" for p in results["Kodak"][1])
            rates = " | ".join(shown(rate) for rate, _ in results.values())
            print(f"| {Path(checkpoint).name} | {step} | {rates} | {points} |", flush=True)


if __name__ == "__main__":
    main()
