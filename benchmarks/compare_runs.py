"""BD-rate between the vaecodec curves of two `vaecodec bench` runs, e.g. two efforts:

    vaecodec bench ../shared/data/kodak -o /tmp/e0 --codecs vaecodec
    vaecodec bench ../shared/data/kodak -o /tmp/e3 --codecs vaecodec --effort 3
    python benchmarks/compare_runs.py /tmp/e0 /tmp/e3
"""

import json
from pathlib import Path

import click

from vaecodec.bench import curve_bd_rates


def curve(folder):
    return json.loads((Path(folder) / "results.json").read_text())["summary"]["curves"]["vaecodec"]


@click.command()
@click.argument("before", type=click.Path(exists=True, file_okay=False))
@click.argument("after", type=click.Path(exists=True, file_okay=False))
def main(before, after):
    """Print both curves side by side and the BD-rates of AFTER against BEFORE."""
    old, new = curve(before), curve(after)
    print("| quality | bpp | PSNR dB | MS-SSIM | encode s | → bpp | PSNR dB | MS-SSIM | encode s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(old, new):
        print(f"| {a['setting']:g} | {a['bpp']:.4f} | {a['psnr']:.2f} | {a['ms_ssim']:.4f} | "
              f"{a['encode_s']:.2f} | {b['bpp']:.4f} | {b['psnr']:.2f} | {b['ms_ssim']:.4f} | "
              f"{b['encode_s']:.2f} |")
    for metric, rate in curve_bd_rates(old, new).items():
        print(f"BD-rate ({metric}) of {after} against {before}: {rate:+.1f} %")


if __name__ == "__main__":
    main()
