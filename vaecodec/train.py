"""Training loop: rate + λ·255²·MSE on random crops, one λ (gain-unit index) drawn per crop.

Checkpoints hold the raw weights, the exponential moving average (EMA) of the weights, the
optimizer and the step, so a run resumes exactly where it stopped; the EMA is what gets exported.
"""

import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import IMAGE_SUFFIXES
from .model import LAMBDAS, VAE
from .weights import save_weights


def load_training_images(folder, max_side=512, min_side=128):
    """All images under `folder` as RGB uint8 arrays. Large photos are downscaled with an area
    filter so that their shorter side is `max_side` (removes sensor noise, matches Kodak's scale)."""
    images = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        with Image.open(path) as img:
            img = img.convert("RGB")
            short = min(img.size)
            if short > max_side:
                size = tuple(round(s * max_side / short) for s in img.size)
                img = img.resize(size, Image.Resampling.BOX)
            if min(img.size) >= min_side:
                images.append(np.asarray(img))
    if not images:
        raise ValueError(f"no training images of at least {min_side}×{min_side} under {folder}")
    return images


def random_batch(images, batch_size, crop, rng):
    """Random crops with random horizontal flips → float tensor [B, 3, crop, crop] in [0, 1]."""
    batch = np.empty((batch_size, crop, crop, 3), dtype=np.uint8)
    for i in range(batch_size):
        img = images[rng.integers(len(images))]
        top = rng.integers(img.shape[0] - crop + 1)
        left = rng.integers(img.shape[1] - crop + 1)
        patch = img[top:top + crop, left:left + crop]
        batch[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)


def learning_rate(run_step, progress, peak, decay=0.2, warmup=500):
    """Linear warm-up over the first steps of every run (a resumed run climbs back from its
    decayed rate instead of jumping), constant, then a cosine decay to peak/20 over the last
    `decay` fraction of the budget (`progress` in 0..1: the larger of the step and time
    fractions). Most of a fine-tuning run's gain comes in the decay."""
    if run_step < warmup:
        return peak * (run_step + 1) / warmup
    t = min(1.0, max(0.0, (progress - (1 - decay)) / decay))
    return peak / 20 + (peak - peak / 20) * 0.5 * (1 + math.cos(math.pi * t))


def bf16_is_native(device):
    """Whether bf16 convolutions run natively here (CUDA, or a CPU with AVX512-BF16 or AMX),
    which makes a training step about twice as fast; elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return True
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def train(data_dir, checkpoint, steps, minutes=None, batch_size=8, crop=128, lr=5e-4, decay=0.2,
          n=96, m=160, init=None, precision="auto", export=None, log_every=50, save_every=250,
          seed=0, log=print):
    """Train (or resume) until `steps` total steps or `minutes` of wall time, then export.
    A new run starts from random weights, or from the weights file `init` (fine-tuning)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop size never changes: autotune once
    checkpoint = Path(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint.exists() else None
    start = None
    if state is not None:
        n, m = state["config"]["n"], state["config"]["m"]
    elif init is not None:
        start = torch.load(init, map_location="cpu", weights_only=True)
        n, m = start["config"]["n"], start["config"]["m"]
    model = VAE(n, m).to(device)
    if start is not None:
        # A context model that the init file lacks (it predates it) keeps its initialization.
        keys = model.load_state_dict(start["state_dict"], strict=False)
        misfits = keys.unexpected_keys + [key for key in keys.missing_keys if not key.startswith(
            ("context_prediction.", "entropy_parameters."))]
        if misfits:
            raise ValueError(f"{init} does not fit this model: {misfits[0]}")
        new = f" ({len(keys.missing_keys)} new tensors initialized)" if keys.missing_keys else ""
        log(f"started from {init}{new}")
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        log(f"resumed {checkpoint} at step {step}")
    bf16 = precision == "bf16" or (precision == "auto" and bf16_is_native(device))
    rng = np.random.default_rng(seed + step)
    torch.manual_seed(seed + step)
    first_step = step
    images = load_training_images(data_dir, min_side=crop)
    log(f"{len(images)} training images, model N={n} M={m}, device {device}, "
        f"{'bf16' if bf16 else 'fp32'} transforms")
    lambdas = torch.tensor(LAMBDAS, device=device)
    run_start = time.monotonic()
    budget = minutes * 60 if minutes else math.inf
    window = []
    started = time.monotonic()

    def save():
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step,
                    "config": {"n": n, "m": m}}, tmp)
        os.replace(tmp, checkpoint)

    while step < steps and time.monotonic() - run_start < budget:
        progress = max(step / steps, (time.monotonic() - run_start) / budget)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - first_step, progress, lr, decay)
        x = random_batch(images, batch_size, crop, rng).to(device)
        level = torch.randint(len(LAMBDAS), (batch_size,), device=device)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x_hat, bits = model(x, level.float())
        bpp = bits / (crop * crop)
        mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
        loss = (bpp + lambdas[level] * 255 ** 2 * mse).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            ema_decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - ema_decay)
        step += 1
        window.append((loss.item(), bpp.mean().item(),
                       (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()))
        if step % log_every == 0:
            mean = np.mean(window, axis=0)
            rate = (time.monotonic() - started) / len(window)
            log(f"step {step}  loss {mean[0]:.3f}  bpp {mean[1]:.3f}  psnr {mean[2]:.2f} dB  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {rate:.2f} s/step")
            window.clear()
            started = time.monotonic()
        if step % save_every == 0:
            save()
    save()
    log(f"stopped at step {step}; checkpoint {checkpoint}")
    if export:
        save_weights(ema.cpu(), export)
        log(f"exported {export}")
    return step


def export_checkpoint(checkpoint, path):
    """Write the weights file of a checkpoint's EMA model (also while its run goes on); returns
    the checkpoint's step."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = VAE(**state["config"])
    model.load_state_dict(state["ema"])
    save_weights(model, path)
    return state["step"]
