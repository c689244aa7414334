"""The codec on a CUDA device against the CPU of the same machine, and files crossing devices.

    python benchmarks/gpu_codec.py prepare IMAGES DIR     # on a CPU machine
    python benchmarks/gpu_codec.py measure DIR -o GPU.tar  # on the GPU machine
    python benchmarks/gpu_codec.py check GPU.tar           # back on the CPU machine

`prepare` compresses each PNG in IMAGES on the CPU at quality 75 into DIR (NAME.png, NAME.vae,
the pixels it decodes to here and a hash of its decoded latents ŷ = s + μ, exact on any device:
NAME.cpu.png, NAME.cpu.sha, of ŷ since 2026-11-27, of s before; and in DIR/weights the
VAECODEC_WEIGHTS it ran with, for `measure` to run with). `measure` times
in-process compress and decompress on CUDA and on the CPU (median of 5 after a warm-up), splits
a decode into the exact prior with the entropy decoder (the coder on the CPU) and the synthesis,
decodes the CPU-made files on CUDA (the same latents; pixels within a level of an fp32 CPU
decode, two of a bf16 one: compute.py), and writes the
files it made on CUDA with their decoded pixels and latents to GPU.tar; `check` decodes those on
this CPU and compares.
"""

import hashlib
import io
import os
import statistics
import tarfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from vaecodec import codec

QUALITY = 75


class Recorder:
    """Wraps codec.residual_passes (prior and entropy decoding) and codec.pixels (synthesis) to
    keep the decoded latents ŷ of the last decode and the seconds spent in each."""

    def __init__(self):
        self.latents, self.seconds = None, {}
        for name in ("residual_passes", "pixels"):
            setattr(codec, name, self._timed(name, getattr(codec, name)))

    def _timed(self, name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            self.seconds[name] = time.perf_counter() - start
            if name == "residual_passes":
                self.latents = result[0]  # ŷ, one tensor per channel group
            return result
        return timed

    def decode(self, data, device):
        """(pixels, a hash of the latents) of a file."""
        pixels = np.asarray(codec.decompress(data, device=device))
        latents = np.concatenate([block.cpu().numpy().ravel() for block in self.latents])
        return pixels, hashlib.sha256(latents.tobytes()).hexdigest()


def median_seconds(function, repeats=5):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


CROSSING = ("| image | made on | decoded on | same latents | largest pixel difference |\n"
            "|---|---|---|---|---:|")


def crossing(stem, made_on, decoded_on, decoded, reference):
    """A row of CROSSING: a decode (pixels, latents' hash) against the other device's."""
    (pixels, latents), (reference_pixels, reference_latents) = decoded, reference
    level = np.abs(pixels.astype(np.int16) - reference_pixels.astype(np.int16)).max()
    same = "yes" if latents == reference_latents else "NO"
    return f"| {stem} | {made_on} | {decoded_on} | {same} | {level} |"


@click.group()
def main():
    pass


@main.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("folder", type=click.Path(file_okay=False))
def prepare(images, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights").write_text(os.environ.get("VAECODEC_WEIGHTS", ""))
    recorder = Recorder()
    for path in sorted(Path(images).glob("*.png")):
        (folder / path.name).write_bytes(path.read_bytes())
        data = codec.compress(Image.open(path), QUALITY, device="cpu")
        (folder / f"{path.stem}.vae").write_bytes(data)
        pixels, latents = recorder.decode(data, "cpu")
        Image.fromarray(pixels).save(folder / f"{path.stem}.cpu.png")
        (folder / f"{path.stem}.cpu.sha").write_text(latents)
        print(f"{path.stem}: {len(data)} bytes")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--device", default="cuda", show_default=True,
              help="The device to measure against the CPU (cpu: a dry run of this script).")
def measure(folder, output, device):
    recorder = Recorder()
    gpu = device
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    lines = [f"{name}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} CPU threads, quality {QUALITY}, median of 5", "",
             "| image | device | compress s | decompress s | prior+entropy s | synthesis s |",
             "|---|---|---:|---:|---:|---:|"]
    checks = []
    with tarfile.open(output, "w") as tar:
        def add(name, payload):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for path in sorted(Path(folder).glob("*.png")):
            if path.name.endswith(".cpu.png"):
                continue
            image = Image.open(path)
            image.load()
            for device in (gpu, "cpu"):
                data = codec.compress(image, QUALITY, device=device)
                encode = median_seconds(lambda: codec.compress(image, QUALITY, device=device))
                decode = median_seconds(lambda: recorder.decode(data, device))
                split = recorder.seconds
                lines.append(f"| {path.stem} | {device} | {encode:.4f} | {decode:.4f} | "
                             f"{split['residual_passes']:.4f} | {split['pixels']:.4f} |")
                print(lines[-1], flush=True)  # what a time limit leaves
            made_here = codec.compress(image, QUALITY, device=gpu)
            pixels, latents = recorder.decode(made_here, gpu)
            add(f"{path.stem}.vae", made_here)
            add(f"{path.stem}.gpu.sha", latents.encode())
            add(f"{path.stem}.gpu.png", _png(pixels))
            cpu_made = (path.parent / f"{path.stem}.vae").read_bytes()
            reference = (np.asarray(Image.open(path.parent / f"{path.stem}.cpu.png")),
                         (path.parent / f"{path.stem}.cpu.sha").read_text())
            checks.append(crossing(path.stem, "CPU machine", gpu,
                                   recorder.decode(cpu_made, gpu), reference))
        lines += ["", CROSSING, *checks]
        report = "\n".join(lines) + "\n"
        add("gpu_codec.md", report.encode())
    print(report)


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
def check(archive):
    recorder = Recorder()
    print(CROSSING)
    with tarfile.open(archive) as tar:
        for name in sorted(n for n in tar.getnames() if n.endswith(".vae")):
            stem = name[:-4]
            reference = (np.asarray(Image.open(tar.extractfile(f"{stem}.gpu.png"))),
                         tar.extractfile(f"{stem}.gpu.sha").read().decode())
            print(crossing(stem, "GPU machine", "CPU machine",
                           recorder.decode(tar.extractfile(name).read(), "cpu"), reference))


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
