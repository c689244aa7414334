"""Throughput of compress and decompress on a local Ray cluster against a local run, on the same
machine in the same run, and the time Ray adds per image.

- Whole command: `vaecodec compress DIR -o OUT` and `decompress`, locally and with `--ray` (which
  starts a local cluster with one worker per CPU: start-up and model loads included).
- Warm: in this process, a loop over the files (torch on every core) against
  `vaecodec.cluster.compress(paths)` on an already running `ray.init(num_cpus=WORKERS)` cluster
  whose workers have loaded the model (one thread each); the two alternate, --rounds times, and
  the best time of each counts, so that a busy machine disturbs the ratio less.
- Ray's cost per image: the same pipeline with a conversion that does nothing, so what remains
  is Ray Data's scheduling, the file read on the worker and the result's trip back.

    python benchmarks/ray_throughput.py ../shared/data/kodak --workers 2
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import ray

from vaecodec import cluster, files
from vaecodec.images import IMAGE_SUFFIXES


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_alternating(rounds, **runs):
    """{name: best seconds} of the runs, called in turn `rounds` times."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: min(seconds) for name, seconds in times.items()}


def command(*args):
    """Seconds that a `vaecodec` command takes in a fresh process."""
    return timed(lambda: subprocess.run([sys.executable, "-m", "vaecodec", *map(str, args)],
                                        check=True, stderr=subprocess.DEVNULL))


def nothing(data):
    """A conversion that does no work: what the pipeline costs by itself."""
    return b""


def drain(dataset):
    for row in cluster.in_order(dataset):
        assert row["error"] is None, row["error"]


@click.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--quality", type=float, default=75, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
def main(images, workers, quality, rounds):
    """Print a Markdown table of seconds and images per second."""
    paths = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    count = len(paths)
    rows = []
    load = os.getloadavg()

    def report(what, seconds):
        rows.append(f"| {what} | {seconds:.1f} | {count / seconds:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report("`vaecodec compress` (local, whole command)",
               command("compress", images, "-o", tmp / "local", "-q", quality))
        report("`vaecodec compress --ray` (new local cluster, whole command)",
               command("compress", images, "-o", tmp / "ray", "-q", quality, "--ray"))
        assert all((tmp / "ray" / p.name).read_bytes() == p.read_bytes()
                   for p in (tmp / "local").iterdir()), "--ray wrote other bytes"
        report("`vaecodec decompress` (local, whole command)",
               command("decompress", tmp / "local", "-o", tmp / "local-png"))
        report("`vaecodec decompress --ray` (new local cluster, whole command)",
               command("decompress", tmp / "local", "-o", tmp / "ray-png", "--ray"))
        vae = sorted((tmp / "local").iterdir())

        files.compress(paths[0].read_bytes(), quality)  # the model loaded outside the timing
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        cluster.connect()
        drain(cluster.compress(paths[:workers * 2], quality))  # workers start, load the model
        for what, local, on_ray in [
            ("compress", lambda: [files.compress(p.read_bytes(), quality) for p in paths],
             lambda: drain(cluster.compress(paths, quality))),
            ("decompress", lambda: [files.decompress(p.read_bytes(), ".png") for p in vae],
             lambda: drain(cluster.decompress(vae))),
        ]:
            best = best_alternating(rounds, local=local, on_ray=on_ray)
            report(f"{what}, local loop (warm, best of {rounds})", best["local"])
            report(f"{what}, {workers} Ray workers (warm, best of {rounds})", best["on_ray"])
        overhead = min(timed(lambda: drain(cluster._convert(paths, nothing)))
                       for _ in range(rounds))
        ray.shutdown()

    print(f"{count} images from {images}, {workers} Ray workers, {os.cpu_count()} CPUs, load "
          f"average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| run | seconds | images/s |\n|---|---:|---:|")
    print("\n".join(rows))
    print(f"\nRay's own cost, a pipeline that converts nothing: {overhead:.2f} s for {count} "
          f"images, {1000 * overhead / count:.0f} ms per image of wall time with {workers} "
          f"workers ({1000 * overhead * workers / count:.0f} ms of worker time).")


if __name__ == "__main__":
    main()
