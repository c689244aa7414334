"""Rate–distortion through the command line, exactly as a user gets it: `vaecodec compress` a
folder at each quality, `vaecodec decompress` the results, then bpp from the `.vae` file sizes and
PSNR over RGB between the originals and the decoded PNGs, averaged over the images.

    python benchmarks/kodak_cli.py ../shared/data/kodak --qualities 5,20,35,50,75,100
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
from PIL import Image

from vaecodec.bench import psnr


def vaecodec(*args):
    subprocess.run([sys.executable, "-m", "vaecodec", *map(str, args)], check=True,
                   stderr=subprocess.DEVNULL)


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--qualities", default="5,20,35,50,75,100", show_default=True)
def main(images, qualities):
    """Print a Markdown table of mean bpp and PSNR per quality."""
    originals = sorted(Path(images).glob("*.png"))
    print("| quality | bpp (file) | PSNR-RGB dB |\n|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for quality in qualities.split(","):
            vae_dir, png_dir = Path(tmp) / f"q{quality}", Path(tmp) / f"q{quality}-png"
            vaecodec("compress", images, "-o", vae_dir, "-q", quality)
            vaecodec("decompress", vae_dir, "-o", png_dir)
            bpps, scores = [], []
            for original in originals:
                reference = np.asarray(Image.open(original).convert("RGB"))
                decoded = np.asarray(Image.open(png_dir / original.name))
                size = (vae_dir / original.with_suffix(".vae").name).stat().st_size
                bpps.append(8 * size / (reference.shape[0] * reference.shape[1]))
                scores.append(psnr(reference, decoded))
            print(f"| {quality} | {np.mean(bpps):.3f} | {np.mean(scores):.2f} |", flush=True)


if __name__ == "__main__":
    main()
