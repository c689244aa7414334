"""Training loop: rate + λ·255²·MSE on random crops, one λ (gain-unit index) drawn per crop.

Built to keep a GPU busy: the training photos live on the device and crops are cut there, the
optimizer is fused, the weight average is one multi-tensor update, and the host reads nothing
back from the device between log lines. The CPU runs the same loop.

Checkpoints hold the raw weights, the exponential moving average (EMA) of the weights, the
optimizer and the step, so a run resumes exactly where it stopped; the EMA is what gets exported.
"""

import copy
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from PIL import Image

from . import weights
from .compute import use_bf16
from .errors import CodecError
from .images import IMAGE_SUFFIXES, encode_image, writer
from .model import VAE
from .widen import widened


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


# Formats of a training pack and their default quality, written 4:4:4 as images.encode_image
# writes them (AVIF's speed pinned there: the figures below depend on it). Training photos as
# `load_training_images` sees them (293 photos, 67 MP): AVIF 4:4:4 at 90 takes 23.5 MB at
# 41.7 dB (10th percentile of the photos 38.9 dB); JPEG 4:4:4 takes 27.6 MB at 90 for 38.0 dB
# (35.3 dB) and 35.6 MB at 94 for 41.5 dB (38.3 dB). The top λ aim near 40 dB: targets must be
# cleaner.
PACK_FORMATS = {"avif": 90, "jpeg": 94}


def pack_training_images(folder, out, fmt="avif", quality=None, min_side=256):
    """Write the training images as `load_training_images` sees them to the new folder `out` in
    a compact format (PACK_FORMATS; quality None: the format's default), for training machines
    that take few megabytes. The folder appears whole or not at all. Returns how many."""
    quality = PACK_FORMATS[fmt] if quality is None else quality
    try:
        writer(f".{fmt}")  # the one check of what this Pillow writes
    except CodecError:
        raise ValueError(f"this Pillow cannot write {fmt.upper()} (built without it); "
                         "pack as JPEG instead") from None
    out = Path(out)
    if out.exists():  # packs of another format would mix into it, each photo seen twice
        raise ValueError(f"{out} exists: give a new folder")
    images = load_training_images(folder, min_side=min_side)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for i, image in enumerate(images):
            (tmp / f"{i:04d}.{fmt}").write_bytes(encode_image(Image.fromarray(image), f".{fmt}",
                                                              quality))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(images)


class Crops:
    """The training photos resident on `device` (one zero-padded uint8 tensor) and random crops
    cut from them there: flipped at random, and half of the batches taken from a region up to
    `max_zoom` times larger, downscaled with an area filter (the photos seen at other scales)."""

    def __init__(self, images, device, seed=0, max_zoom=2.0):
        # Smallest first: the photos large enough for a zoomed crop are a suffix of the list.
        images = sorted(images, key=lambda img: min(img.shape[:2]))
        self.short_sides = np.array([min(img.shape[:2]) for img in images])
        height = max(img.shape[0] for img in images)
        width = max(img.shape[1] for img in images)
        pixels = np.zeros((len(images), height, width, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            pixels[i, :img.shape[0], :img.shape[1]] = img
        self.pixels = torch.from_numpy(pixels).to(device)
        self.sizes = torch.tensor([img.shape[:2] for img in images], device=device)
        self.device = device
        self.max_zoom = max_zoom
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device).manual_seed(seed)

    def batch(self, size, crop, levels):
        """A batch of training examples, without a round trip to the host: crops (float tensor
        [size, 3, crop, crop] in [0, 1]) and the λ index of each (of `levels`)."""
        side = crop
        if self.rng.random() < 0.5:
            side = int(crop * self.rng.uniform(1, self.max_zoom))
        first = int(np.searchsorted(self.short_sides, side))
        if first == len(self.short_sides):
            side, first = crop, 0
        uniform = torch.rand(size, 4, device=self.device, generator=self.generator)
        index = first + (uniform[:, 0] * (len(self.short_sides) - first)).long()
        room = self.sizes[index] - side + 1
        top = (uniform[:, 1] * room[:, 0]).long()
        left = (uniform[:, 2] * room[:, 1]).long()
        steps = torch.arange(side, device=self.device)
        rows = top[:, None] + steps
        flip = uniform[:, 3:] < 0.5
        cols = left[:, None] + torch.where(flip, side - 1 - steps, steps)
        patch = self.pixels[index[:, None, None], rows[:, :, None], cols[:, None, :]]
        x = patch.permute(0, 3, 1, 2).float().div_(255)
        if side != crop:
            x = F.interpolate(x, size=(crop, crop), mode="area")
        level = torch.randint(levels, (size,), device=self.device, generator=self.generator)
        return x.contiguous(memory_format=torch.channels_last), level


def rate_distortion(x, x_hat, bits, lambdas):
    """The training objective, bits per pixel + λ·255²·MSE averaged over the batch (each crop
    with its own λ), and the bpp and MSE of every crop."""
    bpp = bits / (x.shape[2] * x.shape[3])
    mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
    return (bpp + lambdas * 255 ** 2 * mse).mean(), bpp, mse


def learning_rate(run_step, progress, peak, decay=0.2, warmup=500):
    """Linear warm-up over the first steps of every run (a resumed run climbs back from its
    decayed rate instead of jumping), constant, then a cosine decay to peak/20 over the last
    `decay` fraction of the budget (`progress` in 0..1: the larger of the step and time
    fractions). Most of a fine-tuning run's gain comes in the decay."""
    if run_step < warmup:
        return peak * (run_step + 1) / warmup
    t = min(1.0, max(0.0, (progress - (1 - decay)) / decay))
    return peak / 20 + (peak - peak / 20) * 0.5 * (1 + math.cos(math.pi * t))


def _start(checkpoint, init, widen, config, log):
    """The model, its EMA, the optimizer state and the step to start from: the checkpoint's
    when it exists, else the weights file `init`'s (a fresh optimizer; with `widen`, grown into
    a model of `config`: widen.py), else random weights of `config`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) \
        if checkpoint.exists() else None
    if state is not None:
        config, model_state = weights.upgrade(state["config"], state["model"])
        _, ema_state = weights.upgrade(state["config"], state["ema"])
        model = VAE(**config)
        model.load_state_dict(model_state)
        ema = VAE(**config)
        ema.load_state_dict(ema_state)
        log(f"resumed {checkpoint} at step {state['step']}")
        return model, ema, state["optimizer"], state["step"]
    if init is not None:
        model, added = _from_weights(init)
        log(f"started from {init}" + (f" ({added} new tensors initialized)" if added else ""))
        if widen:
            model = widened(VAE(**config), model)
            log(f"widened to N={model.n} M={model.m} groups {'/'.join(map(str, model.groups))}")
    else:
        model = VAE(**config)
    return model, copy.deepcopy(model), None, 0


def _from_weights(path):
    """The model of a weights file and how many of its tensors were missing: a context that the
    file lacks (it predates it) keeps its initialization; anything else that does not fit is a
    ValueError."""
    start = weights.read(path)
    model = VAE(**start["config"])
    keys = model.load_state_dict(start["state_dict"], strict=False)
    misfits = keys.unexpected_keys + [key for key in keys.missing_keys if not key.startswith(
        ("channel_context.", "spatial_context.", "fusion."))]
    if misfits:
        raise ValueError(f"{path} does not fit this model: {misfits[0]}")
    return model, len(keys.missing_keys)


class _Ranks:
    """The processes training together: one, or those torchrun started (WORLD_SIZE > 1), which
    average their gradients (DistributedDataParallel: NCCL on CUDA, gloo on the CPU)."""

    def __init__(self):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.size > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()

    def wrap(self, model):
        """The module whose backward pass averages gradients over the ranks."""
        if self.size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if
                                       self.device.type == "cuda" else None)

    def total(self, values):
        """`values` (a tensor on the device) summed over the ranks."""
        if self.size > 1:
            dist.all_reduce(values)
        return values

    def largest(self, value):
        """The largest of every rank's `value` (a number), so that every rank decides alike;
        with one rank, the number itself (nothing goes to the device and back)."""
        if self.size == 1:
            return value
        values = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, dist.ReduceOp.MAX)
        return values.item()

    def seed(self, *parts):
        """A seed of its own for this rank."""
        return int(np.random.SeedSequence([*parts, self.rank]).generate_state(1)[0])

    def close(self):
        if self.size > 1:
            dist.barrier()
            dist.destroy_process_group()


def train(data_dir, checkpoint, steps, minutes=None, batch_size=8, crop=128, lr=5e-4, decay=0.2,
          n=192, m=320, groups=None, hyper=None, init=None, widen=False, precision="auto",
          compile="auto", export=None, log_every=50, save_minutes=2.0, seed=0, log=print):
    """Train (or resume) until `steps` total steps or `minutes` of wall time, then export; return
    the trained (raw) model. A new run starts from random weights of a model with N, M, channel
    `groups` and `hyper` widths (model.VAE), or from the weights file `init` (fine-tuning; with
    `widen`, a model of those widths that starts computing what `init`'s does: widen.py).
    `compile`: torch.compile the training pass (auto: on CUDA, where it pays back its start-up
    within a minute; graphs: also replay it as CUDA graphs, which saves the launch of every
    kernel where a step is too short to hide it). Under torchrun every rank trains on
    `batch_size` crops of its own and rank 0 alone logs and writes files. The checkpoint is
    written every `save_minutes` (checked at log lines; writing it copies the weights and
    optimizer off the device) and at the end."""
    ranks = _Ranks()
    device = ranks.device
    if ranks.rank:
        log = lambda line: None  # rank 0 speaks for all
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop size never changes: autotune once
    checkpoint = Path(checkpoint)
    torch.manual_seed(seed)  # the same random weights in every rank
    model, ema, optimizer_state, step = _start(
        checkpoint, init, widen, {"n": n, "m": m, "groups": groups, "hyper": hyper}, log)
    model.to(device, memory_format=torch.channels_last)
    # The average in the model's layout: _foreach_lerp_ takes its one-kernel path only for
    # tensors of the same strides.
    ema.to(device, memory_format=torch.channels_last).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    bf16 = use_bf16(precision, device)
    compiled = compile in ("on", "graphs") or (compile == "auto" and device.type == "cuda")
    forward = ranks.wrap(model)
    if compiled:
        # A pass the compiler cannot handle runs eagerly instead of ending a GPU window early.
        torch._dynamo.config.suppress_errors = True
        forward = torch.compile(forward, mode="reduce-overhead" if compile == "graphs" else None)
    torch.manual_seed(ranks.seed(seed, step))
    crops = Crops(load_training_images(data_dir, min_side=crop), device, ranks.seed(seed, step))
    log(f"{len(crops.short_sides)} training images, model N={model.n} M={model.m} "
        f"groups {'/'.join(map(str, model.groups))}, device {device}"
        f"{f' × {ranks.size} ranks' if ranks.size > 1 else ''}, "
        f"{'bf16' if bf16 else 'fp32'} transforms{f', compiled ({compile})' if compiled else ''}")
    lambdas = torch.tensor(model.lambdas, device=device)
    parameters, averages = list(model.parameters()), list(ema.parameters())
    first_step = step
    run_start = time.monotonic()
    budget = minutes * 60 if minutes else math.inf
    # Under torchrun the ranks compare clocks only at log lines, so that they stop together.
    check_every = 1 if ranks.size == 1 else log_every
    elapsed = 0.0  # fraction of the time budget, as the ranks agree on it
    totals = torch.zeros(3, device=device)  # loss, bpp, PSNR summed since the last log line
    window_start, window_steps = time.monotonic(), 0
    last_save = window_start

    def save():
        if ranks.rank:
            return
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step,
                    "config": model.config()}, tmp)
        os.replace(tmp, checkpoint)

    while step < steps and elapsed < 1:
        progress = max(step / steps, elapsed)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - first_step, progress, lr, decay)
        x, level = crops.batch(batch_size, crop, len(lambdas))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x_hat, bits = forward(x, level.float())
        loss, bpp, mse = rate_distortion(x, x_hat, bits, lambdas[level])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(averages, parameters, 1 - min(0.999, (1 + step) / (10 + step)))
            psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()
            totals += torch.stack([loss, bpp.mean(), psnr])
        step += 1
        window_steps += 1
        if step % check_every == 0:
            elapsed = ranks.largest((time.monotonic() - run_start) / budget)
        if step % log_every == 0:
            mean = (ranks.total(totals) / (window_steps * ranks.size)).tolist()
            rate = (time.monotonic() - window_start) / window_steps
            crops_per_s = batch_size * ranks.size / rate
            log(f"step {step}  loss {mean[0]:.3f}  bpp {mean[1]:.3f}  psnr {mean[2]:.2f} dB  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {rate:.3f} s/step  "
                f"{crops_per_s:.1f} crops/s")
            totals.zero_()
            window_start, window_steps = time.monotonic(), 0
            if window_start - last_save > save_minutes * 60:
                save()
                last_save = time.monotonic()
    save()
    log(f"stopped at step {step}; checkpoint {checkpoint}")
    if export and not ranks.rank:
        weights.save_weights(copy.deepcopy(ema).cpu(), export)
        log(f"exported {export}")
    ranks.close()
    return model


def export_checkpoint(checkpoint, path):
    """Write the weights file of a checkpoint's EMA model (also while its run goes on); returns
    the checkpoint's step."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config, ema_state = weights.upgrade(state["config"], state["ema"])
    model = VAE(**config)
    model.load_state_dict(ema_state)
    weights.save_weights(model, path)
    return state["step"]
