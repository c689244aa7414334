"""The highest PSNR a model's transforms can reach: Kodak through the analysis and the synthesis
with y left unquantized, at the gains of each trained λ. No quality of the codec goes above it,
so it says before a long training run whether a quality target is in a model's reach.

    python benchmarks/transform_ceiling.py ../shared/data/kodak weights/vaecodec.pt \
        weights/candidate.pt
"""

import click
import torch

from vaecodec import bench, codec, compute, weights


def mean_psnr(loaded, images, position):
    """Mean PSNR (RGB, 8-bit) of `images` through the codec's fp32 transforms at one λ position,
    y not quantized."""
    transforms = compute.transforms(loaded.model, "cpu", "fp32")
    gain, inverse_gain = loaded.model.gains(torch.tensor([float(position)]))
    total = 0.0
    for _, rgb in images:
        y = codec.analyse(loaded, codec.padded(rgb), transforms) * gain
        with torch.no_grad():
            x_hat = transforms.synthesis(y, inverse_gain)
        height, width = rgb.shape[:2]
        total += bench.psnr(rgb, x_hat[0, :, :height, :width].permute(1, 2, 0).numpy())
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
        loaded = weights.load(path)
        lambdas = loaded.model.lambdas
        print(f"{path}: λ {lambdas[0]} → {mean_psnr(loaded, photos, 0):.2f} dB, "
              f"λ {lambdas[-1]} → {mean_psnr(loaded, photos, len(lambdas) - 1):.2f} dB")


if __name__ == "__main__":
    main()
