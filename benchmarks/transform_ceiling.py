"""The highest PSNR a model's transforms can reach: Kodak through the analysis and the synthesis
with y left unquantized, at the gains of each trained λ. No quality of the codec goes above it,
so it says before a long training run whether a quality target is in a model's reach.

    python benchmarks/transform_ceiling.py ../shared/data/kodak weights/vaecodec.pt \
        weights/candidate.pt
"""

import click
import numpy as np
import torch

from vaecodec import bench, weights


def mean_psnr(model, images, position):
    """Mean PSNR (RGB, 8-bit) of `images` through the transforms at one λ position."""
    gain, inverse_gain = model.gains(torch.tensor([float(position)]))
    total = 0.0
    for _, rgb in images:
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            x_hat = model.synthesis(model.analysis(x) * gain * inverse_gain)
        decoded = x_hat[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        total += bench.psnr(rgb, decoded)
    return total / len(images)


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("weights_files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--max-images", type=int, help="Use only the first N images.")
def main(images, weights_files, max_images):
    """Print, per weights file, the unquantized PSNR at its lowest and highest λ."""
    photos = bench.load_images(images, max_images)
    print(f"{len(photos)} images from {images}; PSNR with y unquantized")
    for path in weights_files:
        model = weights.load(path).model
        top = len(model.lambdas) - 1
        print(f"{path}: λ {model.lambdas[0]} → {mean_psnr(model, photos, 0):.2f} dB, "
              f"λ {model.lambdas[top]} → {mean_psnr(model, photos, top):.2f} dB")


if __name__ == "__main__":
    main()
