"""Speed and memory of vaecodec against classical codecs, measured in the same run.

- In-process encode and decode time per image of the given size, for vaecodec (quality 50) and
  for JPEG, WebP (method 6) and AVIF (speed 6) from imagecodecs, reported as seconds, seconds per
  megapixel and the ratio vaecodec / peer.
- Whole-process CLI time (`vaecodec compress` then `decompress`, Python start-up and model load
  included) and the peak resident memory of each, for images of 0.25, 1 and 4 MP by default.

    python benchmarks/speed.py --sizes 0.25,1,4 -o benchmarks/results/speed.json
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image

import vaecodec

KODAK_SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "kodim23-crop.png"


def test_image(megapixels):
    """A photo resized to about `megapixels` at a 3:2 aspect ratio."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5 / 2)) * 2
    height = int(round(width / 1.5))
    with Image.open(KODAK_SAMPLE) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def best_of(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def in_process(rgb, repeat=3):
    """{codec: (encode s, decode s)} for one image, best of `repeat`."""
    import imagecodecs as ic

    codecs = {
        "vaecodec": (lambda: vaecodec.compress(rgb, 50), vaecodec.decompress),
        "jpeg": (lambda: ic.jpeg8_encode(rgb, 75, subsampling="444", optimize=True),
                 ic.jpeg8_decode),
        "webp": (lambda: ic.webp_encode(rgb, 75, lossless=False, method=6), ic.webp_decode),
        "avif": (lambda: ic.avif_encode(rgb, 50, speed=6, pixelformat="yuv444", numthreads=1),
                 ic.avif_decode),
    }
    vaecodec.compress(rgb[:64, :64], 50)  # load the model outside the timings
    out = {}
    for name, (encode, decode) in codecs.items():
        encode_s, data = best_of(encode, repeat)
        decode_s, _ = best_of(lambda: decode(data), repeat)
        out[name] = (encode_s, decode_s)
    return out


def cli_run(args):
    """Wall time and peak RSS (MiB) of one `vaecodec` process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vaecodec", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"vaecodec {' '.join(args)} failed: {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def measure(sizes, repeat):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for megapixels in sizes:
            rgb = test_image(megapixels)
            pixels = rgb.shape[0] * rgb.shape[1] / 1e6
            png, vae, out = (Path(tmp) / f"{megapixels}.{e}" for e in ("png", "vae", "out.png"))
            Image.fromarray(rgb).save(png)
            compress_s, compress_mib = cli_run(["compress", str(png), "-o", str(vae), "-f"])
            decompress_s, decompress_mib = cli_run(["decompress", str(vae), "-o", str(out), "-f"])
            timings = in_process(rgb, repeat)
            ours = timings["vaecodec"]
            rows.append({
                "megapixels": round(pixels, 3), "size": f"{rgb.shape[1]}×{rgb.shape[0]}",
                "cli_compress_s": compress_s, "cli_decompress_s": decompress_s,
                "cli_compress_peak_mib": compress_mib, "cli_decompress_peak_mib": decompress_mib,
                "in_process": {name: {"encode_s": e, "decode_s": d,
                                      "encode_s_per_mp": e / pixels, "decode_s_per_mp": d / pixels}
                               for name, (e, d) in timings.items()},
                "ratio_vaecodec_to": {name: {"encode": ours[0] / e, "decode": ours[1] / d}
                                      for name, (e, d) in timings.items() if name != "vaecodec"},
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(rows):
    lines = ["| image | vaecodec encode s/MP | decode s/MP | × JPEG enc/dec | × WebP enc/dec | "
             "× AVIF enc/dec | CLI compress s (peak MiB) | CLI decompress s (peak MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ours = r["in_process"]["vaecodec"]
        ratios = [f"{r['ratio_vaecodec_to'][p]['encode']:.0f} / {r['ratio_vaecodec_to'][p]['decode']:.0f}"
                  for p in ("jpeg", "webp", "avif")]
        lines.append(f"| {r['size']} ({r['megapixels']} MP) | {ours['encode_s_per_mp']:.2f} | "
                     f"{ours['decode_s_per_mp']:.2f} | " + " | ".join(ratios) + " | "
                     f"{r['cli_compress_s']:.1f} ({r['cli_compress_peak_mib']:.0f}) | "
                     f"{r['cli_decompress_s']:.1f} ({r['cli_decompress_peak_mib']:.0f}) |")
    return "\n".join(lines)


@click.command()
@click.option("--sizes", default="0.25,1,4", show_default=True, help="Megapixels, comma-separated.")
@click.option("--repeat", default=3, show_default=True, help="In-process timings: best of N.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the JSON here.")
def main(sizes, repeat, output):
    """Time vaecodec against JPEG, WebP and AVIF; print a Markdown table."""
    rows = measure([float(s) for s in sizes.split(",")], repeat)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps({"torch_threads": __import__("torch").get_num_threads(),
                                            "rows": rows}, indent=1))
        Path(output).with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
