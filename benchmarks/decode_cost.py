"""Decode time of a model shape against the shipped weights, in one run: what a wider model will
cost before it is trained (the time depends on the shapes, not on the values of the weights).

    python benchmarks/decode_cost.py ../shared/data/kodak/kodim05.png
    python benchmarks/decode_cost.py IMAGE --synthesis 192,192,192 --hyper 192,288

Random weights of the asked shape (by default model 2: N=192, M=320, five channel groups) are
written to a temporary weights file; each model then compresses the image once and decodes it
`--repeat` times, alternating, and the best times are compared.
"""

import tempfile
import time
from pathlib import Path

import click
import torch
from PIL import Image

from vaecodec import codec, weights
from vaecodec.model import VAE


def widths(ctx, param, value):
    return tuple(int(v) for v in value.split(",")) if value else None


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--channels", "n", default=192, show_default=True)
@click.option("--latents", "m", default=320, show_default=True)
@click.option("--synthesis", callback=widths, help="Synthesis widths (default N, 2N/3, N/2).")
@click.option("--hyper", callback=widths, help="Hyper-synthesis widths (default N, N).")
@click.option("--repeat", default=5, show_default=True)
def main(image, n, m, synthesis, hyper, repeat):
    torch.manual_seed(0)
    model = VAE(n, m, synthesis=synthesis, hyper=hyper)
    with torch.no_grad():  # a context that is not zero, as a trained one
        for name, parameter in model.named_parameters():
            if name.startswith(("channel_context", "fusion")) and name.endswith("weight"):
                parameter.normal_(0, 0.01)
    picture = Image.open(image).convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        shape = Path(tmp) / "shape.pt"
        weights.save_weights(model, shape)
        paths = {"shipped": None, "asked": shape}
        files = {name: codec.compress(picture, 50, weights_path=path)
                 for name, path in paths.items()}
        best = {name: float("inf") for name in paths}
        for _ in range(repeat):
            for name, path in paths.items():
                start = time.perf_counter()
                codec.decompress(files[name], weights_path=path)
                best[name] = min(best[name], time.perf_counter() - start)
    print(f"{model.config()}\nshipped {best['shipped']:.3f} s, asked {best['asked']:.3f} s: "
          f"{best['asked'] / best['shipped']:.2f}×")


if __name__ == "__main__":
    main()
