"""Rate control accuracy: how close `--target-bpp`, `--target-psnr` and `--max-bytes` land, and
what a search costs against one encode at the default quality (measured in the same run).

    python benchmarks/rate_accuracy.py ../shared/data/kodak -o benchmarks/results/rate_accuracy.md

For every image and target: the achieved bpp (whole file), PSNR (RGB, of the decoded file) or
bytes, its error against the target, whether it keeps the promise (bpp within 3 %, PSNR within
0.1 dB, bytes at most the budget and no more than 5 % under), and the number of probes.
"""

import sys
import time
import warnings
from pathlib import Path

import click
import numpy as np

from vaecodec import bench, codec, rate
from vaecodec.bitstream import Bitstream

TARGETS = {"bpp": (0.5,), "psnr": (31.0,), "bytes": (25000,)}  # mid-range on Kodak
_KEYWORD = {"bpp": "target_bpp", "psnr": "target_psnr", "bytes": "max_bytes"}


def _counting(search, counts):
    """`search`, counting the probes of each call into `counts`."""
    def counted(probe, target, strict=False):
        def probe_counted(quality):
            counts[-1] += 1
            return probe(quality)

        counts.append(0)
        return search(probe_counted, target, strict)

    return counted


def measure(images, targets=TARGETS, log=None):
    """One row per image and target."""
    rows, counts = [], []
    search = rate.search
    rate.search = _counting(search, counts)
    try:
        for name, rgb in images:
            pixels = rgb.shape[0] * rgb.shape[1]
            start = time.perf_counter()
            codec.compress(rgb)
            one_encode = time.perf_counter() - start  # at the default quality
            for kind, values in targets.items():
                for value in values:
                    start = time.perf_counter()
                    with warnings.catch_warnings(record=True) as notes:
                        warnings.simplefilter("always")
                        data = codec.compress(rgb, **{_KEYWORD[kind]: value})
                    seconds = time.perf_counter() - start
                    quality = Bitstream.from_bytes(data).quality
                    achieved = {"bpp": 8 * len(data) / pixels, "bytes": len(data),
                                "psnr": bench.psnr(rgb, np.asarray(codec.decompress(data)))}[kind]
                    target = rate.Target(kind, value)
                    low, high = target.bounds()
                    rows.append({"image": name, "kind": kind, "target": value,
                                 "achieved": achieved, "quality": quality,
                                 "error": (achieved - value if kind == "psnr"
                                           else 100 * (achieved / value - 1)),
                                 "kept": bool(low <= achieved <= high), "probes": counts[-1],
                                 "noted": bool(notes), "cost": seconds / one_encode})
            if log:
                log(f"{name}: " + ", ".join(f"{r['kind']} {r['achieved']:.4g}, {r['probes']} probes"
                                            for r in rows if r["image"] == name))
    finally:
        rate.search = search
    return rows


def summary(rows):
    """Markdown: per target kind and value, the error (mean and max of its size), how often the
    promise was kept (and how often a note said it could not be), the probes and the time
    against one encode."""
    lines = ["| target | mean abs. error | max abs. error | promise kept | probes (mean, max) "
             "| search time / one encode |", "|---|---:|---:|---:|---:|---:|"]
    for kind, values in TARGETS.items():
        unit = "dB" if kind == "psnr" else "%"
        for value in values:
            group = [r for r in rows if r["kind"] == kind and r["target"] == value]
            errors = np.abs([r["error"] for r in group])
            probes = [r["probes"] for r in group]
            noted = sum(r["noted"] for r in group)
            lines.append(
                f"| {rate.Target(kind, value)} | {errors.mean():.2f} {unit} | "
                f"{errors.max():.2f} {unit} | {sum(r['kept'] for r in group)} of {len(group)}"
                + (f" ({noted} noted as out of reach)" if noted else "") + " | "
                f"{np.mean(probes):.1f}, {max(probes)} | "
                f"{np.mean([r['cost'] for r in group]):.1f} |")
    return "\n".join(lines)


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write the table (and every row) to this Markdown file.")
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
def main(images, output, max_images):
    """Print the accuracy table."""
    rows = measure(bench.load_images(images, max_images),
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    table = summary(rows)
    print(table)
    if output:
        detail = ["| image | target | achieved | quality | error | kept | probes |",
                  "|---|---|---:|---:|---:|---|---:|"]
        detail += [f"| {r['image']} | {rate.Target(r['kind'], r['target'])} | "
                   f"{r['achieved']:.4f} | {r['quality']:g} | {r['error']:+.3f} | "
                   f"{'yes' if r['kept'] else 'no'} | {r['probes']} |" for r in rows]
        Path(output).write_text(f"{table}\n\nEvery image:\n\n" + "\n".join(detail) + "\n")


if __name__ == "__main__":
    main()
