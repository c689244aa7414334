"""Speed and memory of vaecodec, with every time set against a peer measured in the same run.

    python benchmarks/speed.py --kodak ../shared/data/kodak --sizes 1,4,16,24 \
        -o benchmarks/results/speed.json

- In process, per Kodak image (the first 4, best of 3 runs each): vaecodec's encode and decode
  against CompressAI's mbt2018-mean at quality 3 (random weights, `pretrained=False` and
  `update(force=True)`: they cost what trained ones do) and JPEG, WebP and AVIF from imagecodecs.
  CompressAI is optional; it needs its own virtualenv (see the README).
- The whole command, median of 5: `vaecodec compress kodim01.png` and `vaecodec decompress` of its
  file, Python start-up, torch import and weights load included, taking turns with the peer
  `python -c "import torch"`.
- A batch: the Kodak folder with `--jobs 2`, against the same on one core (`taskset`, so torch
  also sees one core) and with the default `--jobs 1`, in images per second (best of 2 rounds).
- Sizes (megapixels, 3:2): the command's time per megapixel and peak resident memory, compress
  and decompress.

Where the time goes, operator by operator (torch.profiler, one encode and one decode):

    python benchmarks/speed.py --profile ../shared/data/kodak/kodim01.png
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from vaecodec import allocator, bench, codec, workers
from vaecodec.compute import bf16_is_native

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "kodim23-crop.png"


def sized_image(megapixels):
    """A photo resized to about `megapixels` at a 3:2 aspect ratio."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5 / 2)) * 2
    height = int(round(width / 1.5))
    with Image.open(SAMPLE) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def machine():
    """The CPU, its cores and whether it runs bf16 natively."""
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    native = bf16_is_native(torch.device("cpu"))
    return f"{names[0] if names else 'CPU'}, {workers.cores()} cores, bf16 {'native' if native else 'emulated'}"


def best_of(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def compressai_codec():
    """(encode, decode) of CompressAI's mbt2018-mean q3, or None where it is not installed."""
    try:
        from compressai.zoo import mbt2018_mean
    except ImportError:
        return None
    model = mbt2018_mean(3, pretrained=False).eval()
    model.update(force=True)

    def encode(rgb):
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[2:]
        x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
        with torch.no_grad():
            return model.compress(x)

    def decode(out):
        with torch.no_grad():
            return model.decompress(out["strings"], out["shape"])

    return encode, decode


def in_process(images, repeat):
    """{codec: {"encode_s": mean over images of the best of `repeat`, "decode_s": …}}."""
    import imagecodecs as ic

    codecs = {
        "vaecodec": (lambda rgb: codec.compress(rgb, 50), codec.decompress),
        "jpeg": (lambda rgb: ic.jpeg8_encode(rgb, 75, subsampling="444", optimize=True),
                 ic.jpeg8_decode),
        "webp": (lambda rgb: ic.webp_encode(rgb, 75, lossless=False, method=6), ic.webp_decode),
        "avif": (lambda rgb: ic.avif_encode(rgb, 50, speed=6, pixelformat="yuv444",
                                            numthreads=1), ic.avif_decode),
    }
    if compressai_codec():
        codecs["compressai"] = compressai_codec()
    times = {name: {"encode_s": [], "decode_s": []} for name in codecs}
    for rgb in images:
        for name, (encode, decode) in codecs.items():
            encode(rgb[:64, :64])  # load models outside the timings
            encode_s, data = best_of(lambda: encode(rgb), repeat)
            decode_s, _ = best_of(lambda: decode(data), repeat)
            times[name]["encode_s"].append(encode_s)
            times[name]["decode_s"].append(decode_s)
    return {name: {k: float(np.mean(v)) for k, v in t.items()} for name, t in times.items()}


# Runs a command and prints its wall time and peak RSS. A small process of its own starts it: Linux
# counts the memory of the process that forks into a child's peak, and this one holds models.
LAUNCH = """
import resource, subprocess, sys, time
start = time.perf_counter()
status = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(status)
"""


def command(args, cores=None):
    """Wall time and peak RSS (MiB) of one `vaecodec` process (on the first `cores` cores)."""
    pin = ["taskset", "-c", f"0-{cores - 1}"] if cores else []
    script = Path(sys.executable).with_name("vaecodec")  # this environment's command
    done = subprocess.run([sys.executable, "-c", LAUNCH, *pin, str(script), *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vaecodec {' '.join(map(str, args))} failed: {done.stderr}")
    seconds, peak_kib = done.stdout.split()
    return float(seconds), int(peak_kib) / 1024


def compile_bytecode():
    """vaecodec's modules compiled to bytecode, as `pip install` leaves them: an editable install
    under PYTHONDONTWRITEBYTECODE (this machine's environment sets it) would otherwise compile
    every module at every start of the command, about 0.1 s that no installed copy spends."""
    import compileall

    import vaecodec

    compileall.compile_dir(Path(vaecodec.__file__).parent, quiet=1)


def whole_command(image, tmp, runs=5):
    """Median wall time of `vaecodec compress IMAGE`, `vaecodec decompress` of its file and, as
    the peer, `python -c "import torch"` in this environment, the three taking turns."""
    vae, png = tmp / "cli.vae", tmp / "cli.png"
    times = {"compress_s": [], "decompress_s": [], "import_torch_s": []}
    for _ in range(runs):
        times["compress_s"].append(command(["compress", image, "-o", vae, "-f"])[0])
        times["decompress_s"].append(command(["decompress", vae, "-o", png, "-f"])[0])
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times["import_torch_s"].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def batch(folder, tmp, rounds=2):
    """Images per second compressing `folder`: --jobs 2, one core, and --jobs 1; the best of
    `rounds` rounds that take turns, so that a change in the machine's load hits all three."""
    count = len([p for p in Path(folder).iterdir() if p.suffix.lower() == ".png"])
    runs = {"jobs_2": (["--jobs", 2], None), "one_core": ([], 1), "jobs_1": ([], None)}
    out = {name: 0.0 for name in runs}
    for _ in range(rounds):
        for name, (extra, cores) in runs.items():
            seconds, _ = command(["compress", folder, "-o", tmp / name, "-f", *extra], cores)
            out[name] = max(out[name], count / seconds)
    return out


def sizes(megapixel_list, tmp):
    rows = []
    for megapixels in megapixel_list:
        rgb = sized_image(megapixels)
        pixels = rgb.shape[0] * rgb.shape[1] / 1e6
        png, vae, out = (tmp / f"{megapixels}.{e}" for e in ("png", "vae", "out.png"))
        Image.fromarray(rgb).save(png, compress_level=1)
        compress_s, compress_mib = command(["compress", png, "-o", vae, "-f"])
        decompress_s, decompress_mib = command(["decompress", vae, "-o", out, "-f"])
        rows.append({"megapixels": round(pixels, 3), "size": f"{rgb.shape[1]}×{rgb.shape[0]}",
                     "compress_s_per_mp": compress_s / pixels, "compress_peak_mib": compress_mib,
                     "decompress_s_per_mp": decompress_s / pixels,
                     "decompress_peak_mib": decompress_mib})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(result):
    kept = "; freed memory kept in process" if result.get("keep_freed_memory") else ""
    lines = [f"{result['machine']}; torch {result['torch']}, {result['threads']} threads{kept}; "
             f"load average {result['load_before']:.1f} before, {result['load_after']:.1f} after.", ""]
    if "in_process" in result:
        times = result["in_process"]
        ours = times["vaecodec"]
        lines += ["| in process, Kodak (mean of 4, best of 3) | encode s | decode s | "
                  "vaecodec ÷ it, encode | decode |", "|---|---:|---:|---:|---:|"]
        for name, t in times.items():
            lines.append(f"| {name} | {t['encode_s']:.3f} | {t['decode_s']:.3f} | "
                         f"{ours['encode_s'] / t['encode_s']:.2f} | "
                         f"{ours['decode_s'] / t['decode_s']:.2f} |")
        lines.append("")
    if "command" in result:
        c = result["command"]
        lines += [f"Whole command on kodim01.png, median of 5: compress {c['compress_s']:.2f} s, "
                  f"decompress {c['decompress_s']:.2f} s; `python -c \"import torch\"` "
                  f"{c['import_torch_s']:.2f} s in turn with them "
                  f"({c['compress_s'] / c['import_torch_s']:.2f}× and "
                  f"{c['decompress_s'] / c['import_torch_s']:.2f}× that).", ""]
    if "batch" in result:
        b = result["batch"]
        lines += [f"Kodak folder: {b['jobs_2']:.2f} images/s with --jobs 2, {b['one_core']:.2f} "
                  f"on one core ({b['jobs_2'] / b['one_core']:.2f}×), {b['jobs_1']:.2f} with "
                  "--jobs 1 (torch's threads).", ""]
    if result.get("sizes"):
        first = result["sizes"][0]
        lines += ["| image | compress s/MP (× first) | peak MiB | decompress s/MP (× first) | "
                  "peak MiB |", "|---|---:|---:|---:|---:|"]
        for r in result["sizes"]:
            lines.append(
                f"| {r['size']} ({r['megapixels']} MP) | {r['compress_s_per_mp']:.2f} "
                f"({r['compress_s_per_mp'] / first['compress_s_per_mp']:.2f}) | "
                f"{r['compress_peak_mib']:.0f} | {r['decompress_s_per_mp']:.2f} "
                f"({r['decompress_s_per_mp'] / first['decompress_s_per_mp']:.2f}) | "
                f"{r['decompress_peak_mib']:.0f} |")
    return "\n".join(lines)


def profile(path, rows=12):
    """torch.profiler's operators by own time, for one encode and one decode of an image."""
    from torch.profiler import profile as record

    rgb = np.asarray(Image.open(path).convert("RGB"))
    data = codec.compress(rgb, 50)
    codec.decompress(data)  # load everything outside the profile
    for name, work in (("encode", lambda: codec.compress(rgb, 50)),
                       ("decode", lambda: codec.decompress(data))):
        start = time.perf_counter()
        with record() as recorded:
            work()
        print(f"{name}: {time.perf_counter() - start:.3f} s (profiled)")
        print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


@click.command()
@click.option("--profile", "profile_image", type=click.Path(exists=True, dir_okay=False),
              help="Only print where one encode and decode of this image spend their time.")
@click.option("--kodak", type=click.Path(exists=True, file_okay=False),
              help="The Kodak folder: in-process, whole-command and batch timings.")
@click.option("--sizes", "megapixels", default="1,4,16,24", show_default=True,
              help="Megapixels, comma-separated (empty: none).")
@click.option("--repeat", default=3, show_default=True, help="In-process timings: best of N.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch threads for the in-process timings (default: torch's choice).")
@click.option("--parts", default="in_process,command,batch,sizes", show_default=True,
              help="What to measure, comma-separated.")
@click.option("--keep-freed-memory", is_flag=True,
              help="In process, let glibc keep freed memory as the command does "
                   "(vaecodec.allocator; it applies to the whole process, so to every codec).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the JSON here and the Markdown beside it.")
def main(profile_image, kodak, megapixels, repeat, threads, parts, keep_freed_memory, output):
    """Time vaecodec against its peers; print a Markdown summary."""
    if threads:
        torch.set_num_threads(threads)
    if keep_freed_memory:
        allocator.keep_freed_memory()
    if profile_image:
        return profile(profile_image)
    parts = set(parts.split(","))
    result = {"machine": machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0],
              "keep_freed_memory": keep_freed_memory}
    if parts & {"command", "batch", "sizes"}:
        compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if kodak and "in_process" in parts:
            images = [rgb for _, rgb in bench.load_images(kodak, 4)]
            result["in_process"] = in_process(images, repeat)
            print(json.dumps(result["in_process"]), file=sys.stderr)
        if kodak and "command" in parts:
            result["command"] = whole_command(sorted(Path(kodak).glob("*.png"))[0], tmp)
        if kodak and "batch" in parts:
            result["batch"] = batch(kodak, tmp)
        if "sizes" in parts:
            result["sizes"] = sizes([float(m) for m in megapixels.split(",") if m], tmp)
    result["load_after"] = os.getloadavg()[0]
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=1))
        Path(output).with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
