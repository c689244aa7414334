"""Training throughput: crops per second of `vaecodec train`'s loop against the loop of vaecodec
0.4, on the same device, model, batch and crop size, in one run.

    python benchmarks/train_speed.py TRAINING_IMAGES --batch-size 32 --crop 256 --steps 300

The 0.4 loop (the peer, written out below as it was) cuts crops on the CPU, reads the loss back
every step, updates the weight average tensor by tensor and uses the default Adam. Both run the
same model in the same precision; the current loop's rate is that of its last log window, so
compilation and start-up are left out of it, as they are from the peer's (its first steps are not
timed either).
"""

import copy
import math
import re
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from vaecodec.compute import bf16_is_native
from vaecodec.model import VAE
from vaecodec.train import load_training_images, rate_distortion, train


def peer_rate(images, config, batch_size, crop, steps, device):
    """Crops per second of vaecodec 0.4's training step."""
    model = VAE(**config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    lambdas = torch.tensor(model.lambdas, device=device)
    rng = np.random.default_rng(0)
    bf16 = bf16_is_native(device)
    warmup = max(steps // 5, 1)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        batch = np.empty((batch_size, crop, crop, 3), dtype=np.uint8)
        for i in range(batch_size):
            img = images[rng.integers(len(images))]
            top = rng.integers(img.shape[0] - crop + 1)
            left = rng.integers(img.shape[1] - crop + 1)
            patch = img[top:top + crop, left:left + crop]
            batch[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255).to(device)
        level = torch.randint(len(lambdas), (batch_size,), device=device)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x_hat, bits = model(x, level.float())
        loss, bpp, mse = rate_distortion(x, x_hat, bits, lambdas[level])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        loss.item(), bpp.mean().item(), mse.mean().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def current_rate(data, config, batch_size, crop, steps, compile):
    """Crops per second of `vaecodec.train.train`, from its last log line."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        train(data, Path(tmp) / "run.ckpt", steps, batch_size=batch_size, crop=crop,
              log_every=max(steps // 2, 1), save_minutes=math.inf, compile=compile,
              log=lines.append, **config)
    rates = [float(m.group(1)) for line in lines if (m := re.search(r"([\d.]+) crops/s", line))]
    return rates[-1]


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--batch-size", default=32, show_default=True)
@click.option("--crop", default=256, show_default=True)
@click.option("--steps", default=300, show_default=True, help="Steps timed per loop.")
@click.option("--model", "models", multiple=True, default=["0.4", "2"], show_default=True,
              help="0.4: N=96, M=160, one group; 2: N=192, M=320, five groups.")
@click.option("--compile", "modes", type=click.Choice(["auto", "on", "graphs", "off"]),
              multiple=True, default=["auto"], show_default=True,
              help="The current loop's --compile; repeat it to compare several in one run.")
def main(data, batch_size, crop, steps, models, modes):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = {"0.4": {"n": 96, "m": 160, "groups": (160,), "hyper": (160, 240)},
               "2": {"n": 192, "m": 320}}
    images = load_training_images(data, min_side=crop)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, {batch_size}×{crop}², {steps} steps per loop")
    print("| model | 0.4 loop crops/s | --compile | current loop crops/s | ratio |\n"
          "|---|---:|---|---:|---:|")
    for name in models:
        peer = peer_rate(images, configs[name], batch_size, crop, steps, device)
        for mode in modes:
            ours = current_rate(data, configs[name], batch_size, crop, steps, mode)
            print(f"| {name} | {peer:.1f} | {mode} | {ours:.1f} | {ours / peer:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
