"""Entropy-coding overhead: the size of real `.vae` files against the model's own rate estimate
(the bits its float prior assigns to the same quantized latents), per quality.

    python benchmarks/rate_overhead.py ../shared/data/kodak --max-images 6 --qualities 40,60

The file size counts everything (header, z and y sections, CRC); the estimate is what an ideal
entropy coder would need with the unsnapped float model. Their ratio is what the table snapping,
the finite precision of the range coder and the container cost.
"""

import click
import torch

from vaecodec import bench, codec, weights


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--max-images", default=6, show_default=True)
@click.option("--qualities", default="40,60", show_default=True)
def main(images, max_images, qualities):
    """Print a Markdown table of file bits / estimated bits per quality."""
    loaded = weights.load()
    data = bench.load_images(images, max_images)
    print("| quality | file bits | estimated bits | overhead |\n|---:|---:|---:|---:|")
    for quality in (float(q) for q in qualities.split(",")):
        actual = estimate = 0.0
        for _, rgb in data:
            z, s, mean, _, _ = codec.latents(loaded, rgb, quality)
            actual += 8 * len(codec.compress(rgb, quality))
            with torch.no_grad():
                estimate += loaded.model.bits(torch.from_numpy(z).float(),
                                              (torch.from_numpy(s) + mean).float())
        print(f"| {quality:g} | {actual:.0f} | {estimate:.0f} | {100 * (actual / estimate - 1):+.2f} % |")


if __name__ == "__main__":
    main()
