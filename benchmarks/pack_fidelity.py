"""Size and fidelity of a training pack (`vaecodec pack-images`) per format and quality: total
bytes, PSNR over all photos against the photos training sees unpacked, and the worst and
10th percentile of the photos' PSNR.

    python benchmarks/pack_fidelity.py ../shared/data/train avif:90 jpeg:90 jpeg:94
"""

import tempfile
from pathlib import Path

import click
import numpy as np

from vaecodec.bench import psnr
from vaecodec.train import load_training_images, pack_training_images


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("settings", nargs=-1, required=True)
def main(folder, settings):
    """SETTINGS: FORMAT:QUALITY, e.g. avif:90."""
    originals = load_training_images(folder, min_side=256)
    click.echo("| format | quality | MB | PSNR dB | worst photo dB | 10th percentile dB |\n"
               "|---|---:|---:|---:|---:|---:|")
    for setting in settings:
        fmt, quality = setting.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            pack = Path(tmp) / "pack"  # a new folder, as pack_training_images wants
            pack_training_images(folder, pack, fmt, int(quality))
            size = sum(path.stat().st_size for path in pack.iterdir())
            packed = load_training_images(pack)
        each = np.array([psnr(o, p) for o, p in zip(originals, packed)])
        # Over all photos: the mean of their squared errors, each weighted by its size.
        sizes = np.array([o.size for o in originals])
        whole = -10 * np.log10(np.sum(sizes * 10 ** (-each / 10)) / sizes.sum())
        click.echo(f"| {fmt} | {quality} | {size / 1e6:.1f} | {whole:.2f} | {each.min():.2f} | "
                   f"{np.percentile(each, 10):.2f} |")


if __name__ == "__main__":
    main()
