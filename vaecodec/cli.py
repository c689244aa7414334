"""The `vaecodec` command: compress, decompress, info, train, pack-images, bench.

Every file is handled on its own: a bad one is reported in one line on stderr and the rest are
still processed; the exit status is 1 when anything failed. Outputs are written to a temporary
file beside the target and renamed into place, so an error or an interrupt never leaves a partial
file, and an existing output is only replaced with --force.
"""

import importlib.util
import os
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import click

from . import files
from .bench import CODECS
from .bitstream import MAX_PIXELS, Bitstream
from .errors import ConversionWarning
from .files import Failed, conversion_notes, describe
from .images import IMAGE_SUFFIXES

STDIO = Path("-")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _raise_on_sigterm():
    """Turn `kill` into an exception, so the temporary file is removed on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaecodec")
def main():
    """vaecodec: a learned image codec (.vae files)."""
    _raise_on_sigterm()


def _expand(inputs, suffixes):
    """Files named on the command line, with directories replaced by their matching files."""
    files = []
    for path in map(Path, inputs):
        if path != STDIO and path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in suffixes))
        else:
            files.append(path)
    return files


def _plan(inputs, output, suffixes, new_suffix):
    """Pair every input file with its output path.

    One input file: OUTPUT is the file to write (or a directory to write into); without it the
    output goes beside the input. Several inputs or a directory: OUTPUT is a directory.
    `-` reads stdin / writes stdout.
    """
    files = _expand(inputs, suffixes)
    batch = len(inputs) > 1 or any(p != STDIO and p.is_dir() for p in map(Path, inputs))
    out = Path(output) if output else None
    if batch and out == STDIO:
        raise click.UsageError("cannot write several files to stdout")
    if batch and out is not None:
        if out.exists() and not out.is_dir():
            raise click.UsageError(f"{out}: with several inputs, -o must be a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise click.UsageError(f"cannot create {out} ({error.strerror})") from None
    pairs, sources = [], {}
    for path in files:
        if path == STDIO:
            target = out / f"stdin{new_suffix}" if out and out != STDIO and out.is_dir() \
                else out or STDIO
        elif out is None:
            target = path.with_suffix(new_suffix)
        elif out == STDIO or not out.is_dir():
            target = out
        else:
            target = out / (path.stem + new_suffix)
        if target != STDIO and target in sources:
            raise click.UsageError(f"{sources[target]} and {path} would both be written to {target}")
        sources[target] = path
        pairs.append((path, target))
    return pairs, batch


def _read(path):
    return sys.stdin.buffer.read() if path == STDIO else files.read(path)


def _check_target(source, target, force):
    if target == STDIO:
        return
    if source != STDIO and target.exists() and target.resolve() == source.resolve():
        raise Failed("input and output are the same file")
    if target.is_dir():
        raise Failed(f"output {target} is a directory")
    if target.exists() and not force:
        raise Failed(f"output {target} exists (use --force to overwrite)")


def _write(target, data):
    """Write atomically: a temporary file in the target's directory, then a rename."""
    if target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise Failed(f"cannot write {target} ({error.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise Failed(f"cannot write {target} ({error.strerror})") from None
        raise


def _run(pairs, batch, work, force):
    """Apply `work(source, target)` to every pair, reporting failures; exit 1 if any failed."""
    failed = 0
    items = pairs
    bar = None
    if batch and len(pairs) > 1:
        bar = click.progressbar(pairs, label="vaecodec", file=sys.stderr,
                                item_show_func=lambda p: p and p[0].name)
        items = bar.__enter__()
    try:
        for source, target in items:
            name = "<stdin>" if source == STDIO else str(source)
            try:
                with conversion_notes() as notes:
                    _check_target(source, target, force)
                    work(source, target)
                for note in notes:
                    click.echo(f"note: {name}: {note}", err=True)
            except Exception as error:  # one line, and the batch goes on
                failed += 1
                click.echo(f"error: {name}: {describe(error)}", err=True)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if batch and len(pairs) > 1:
        click.echo(f"{len(pairs) - failed} of {len(pairs)} files done"
                   + (f", {failed} failed" if failed else ""), err=True)
    if not pairs:
        click.echo("error: no input files found", err=True)
    if failed or not pairs:
        sys.exit(1)


def _on_ray(pairs, force, address, submit):
    """A `work` for _run that writes each file's output as it comes back from a Ray cluster.

    The files whose output may be written (checked here, and again by _run as for a local run)
    go to the cluster as one Ray Data pipeline, `submit(cluster, paths)`: the workers read and
    convert them, and the results come back in order."""
    try:
        from . import cluster
    except ImportError:
        click.echo("error: --ray needs Ray: pip install 'vaecodec[ray]'", err=True)
        sys.exit(1)
    if any(STDIO in pair for pair in pairs):
        raise click.UsageError("--ray works on files, not stdin or stdout")
    sent = set()
    for source, target in pairs:
        try:
            _check_target(source, target, force)
            sent.add(source)
        except Failed:
            pass  # _run reports it
    rows = iter(())
    if sent:
        try:
            cluster.connect(address)
        except Exception as error:
            click.echo(f"error: cannot join the Ray cluster ({describe(error)})", err=True)
            sys.exit(1)
        rows = cluster.in_order(submit(cluster, [os.path.abspath(s) for s, _ in pairs
                                                 if s in sent]))

    def work(source, target):
        if source not in sent:
            raise Failed(f"output {target} was in the way when the run started")
        path = os.path.abspath(source)
        row = next((row for row in rows if row["path"] == path), None)
        if row is None:
            raise Failed("the Ray cluster returned no result")
        for note in row["notes"]:
            warnings.warn(note, ConversionWarning)
        if row["error"] is not None:
            raise Failed(row["error"])
        _write(target, row["output"])

    return work


_max_pixels = click.option("--max-pixels", type=click.IntRange(min=1), default=MAX_PIXELS,
                           show_default=True, help="Refuse images with more pixels than this.")
_force = click.option("--force", "-f", is_flag=True, help="Overwrite existing output files.")
_output = click.option("-o", "--output", type=click.Path(),
                       help="Output file, or directory when there are several inputs.")


def _ray_options(command):
    """--ray and --ray-address: the work on a Ray cluster, the writing here."""
    command = click.option("--ray-address", metavar="ADDR",
                           help="The Ray cluster to use (implies --ray).")(command)
    return click.option("--ray", "use_ray", is_flag=True,
                        help="Read and convert the files on a Ray cluster ($RAY_ADDRESS, else "
                             "a local one); needs pip install 'vaecodec[ray]'.")(command)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_output
@click.option("-q", "--quality", type=click.FloatRange(1, 100), default=75, show_default=True,
              help="1 (smallest) to 100 (best).")
@_force
@_max_pixels
@_ray_options
def compress(inputs, output, quality, force, max_pixels, use_ray, ray_address):
    """Compress images (files or directories; - for stdin) to .vae files."""
    def work(source, target):
        _write(target, files.compress(_read(source), quality, max_pixels))

    pairs, batch = _plan(inputs, output, IMAGE_SUFFIXES, ".vae")
    if use_ray or ray_address:
        work = _on_ray(pairs, force, ray_address, lambda cluster, paths: cluster.compress(
            paths, quality, max_pixels=max_pixels))
    _run(pairs, batch, work, force)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_output
@_force
@_max_pixels
@_ray_options
def decompress(inputs, output, force, max_pixels, use_ray, ray_address):
    """Decompress .vae files to images (format from the output extension, PNG by default)."""
    def work(source, target):
        extension = "" if target == STDIO else target.suffix
        _write(target, files.decompress(_read(source), extension, max_pixels))

    pairs, batch = _plan(inputs, output, (".vae",), ".png")
    if use_ray or ray_address:
        # One extension: _plan pairs one input with one output, or several with .png files.
        (extension,) = {target.suffix for _, target in pairs} or {".png"}
        work = _on_ray(pairs, force, ray_address, lambda cluster, paths: cluster.decompress(
            paths, extension, max_pixels=max_pixels))
    _run(pairs, batch, work, force)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
def info(inputs):
    """Show the header of .vae files."""
    def work(source, _):
        data = _read(source)
        stream = Bitstream.from_bytes(data, max_pixels=2 ** 64)
        pixels = stream.width * stream.height
        click.echo(f"{source}: {stream.width}×{stream.height} {stream.mode}, "
                   f"quality {stream.quality:g}, {len(data)} bytes, "
                   f"{8 * len(data) / pixels:.4f} bpp, model {stream.model_id.hex()}")

    pairs = [(path, STDIO) for path in _expand(inputs, (".vae",))]
    _run(pairs, False, work, force=True)


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True,
              help="Resumable training state (created if missing).")
@click.option("--export", type=click.Path(dir_okay=False),
              help="Write the codec's weights file here when done (e.g. weights/vaecodec.pt).")
@click.option("--steps", type=click.IntRange(min=1), default=30000, show_default=True,
              help="Total steps, counting those already in the checkpoint.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this much wall time (this run).")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate.")
@click.option("--decay", type=click.FloatRange(0, 1, min_open=True), default=0.2,
              show_default=True,
              help="Fraction of the budget (steps or minutes) spent in the final cosine decay.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(min=64), default=128, show_default=True)
@click.option("--channels", "n", type=click.IntRange(min=8), default=192, show_default=True,
              help="Width N of the transforms (new runs only).")
@click.option("--latents", "m", type=click.IntRange(min=8), default=320, show_default=True,
              help="Latent channels M (new runs only).")
@click.option("--groups", callback=lambda ctx, param, value: _integers(value),
              help="Channel groups of the context, comma-separated, summing to M (new runs only; "
                   "default: ELIC's proportions, 16,16,32,64,192 for M=320).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Start a new run from this weights file instead of random weights.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
              show_default=True,
              help="Arithmetic of the transforms (the prior and rates are always fp32); auto: "
                   "bf16 where the hardware runs it natively.")
@click.option("--compile", "compile_", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="torch.compile the training pass; auto: on CUDA.")
def train(data_dir, checkpoint, export, steps, minutes, lr, decay, batch_size, crop, n, m,
          groups, init, precision, compile_):
    """Train the model on a folder of images (CUDA when available)."""
    from .train import train as run

    try:
        run(data_dir, checkpoint, steps, minutes, batch_size=batch_size, crop=crop, lr=lr,
            decay=decay, n=n, m=m, groups=groups, init=init, precision=precision,
            compile=compile_, export=export, log=lambda line: click.echo(line, err=True))
    except (ValueError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


def _integers(value):
    """A comma-separated list of positive integers (None stays None)."""
    if value is None:
        return None
    try:
        numbers = tuple(int(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, got {value!r}")
    return numbers


@main.command("pack-images")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder for the JPEG files.")
@click.option("--quality", type=click.IntRange(1, 100), default=94, show_default=True)
def pack_images(data_dir, output, quality):
    """Write a compact JPEG copy (4:4:4) of a training folder as training sees it: downscaled,
    small images left out. For training machines that take few megabytes."""
    from .train import pack_training_images

    try:
        count = pack_training_images(data_dir, output, quality)
    except (ValueError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    click.echo(f"{count} images in {output}", err=True)


@main.command()
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for results.json, results.md and rd.png.")
@click.option("--codecs", default=",".join(CODECS), show_default=True,
              help="Comma-separated subset of the codecs.")
@click.option("--qualities", help="Comma-separated vaecodec qualities (default: a sweep of 8).")
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
def bench(images_dir, out_dir, codecs, qualities, max_images):
    """Rate–distortion benchmark against JPEG, WebP, AVIF, JPEG XL and JPEG 2000."""
    from . import bench as benchmark

    names = [c.strip() for c in codecs.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CODECS))
    if unknown:
        raise click.UsageError(f"unknown codecs {', '.join(unknown)}; choose from {', '.join(CODECS)}")
    needed = (["imagecodecs"] if set(names) - {"vaecodec"} else []) + ["pytorch_msssim"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        click.echo(f"error: {', '.join(missing)} not installed; pip install 'vaecodec[bench]'",
                   err=True)
        sys.exit(1)
    try:
        levels = [float(q) for q in qualities.split(",")] if qualities else None
    except ValueError:
        raise click.UsageError(f"--qualities must be numbers, got {qualities!r}") from None
    try:
        summary = benchmark.run(images_dir, out_dir, names, levels, max_images,
                                progress=lambda codec, image: click.echo(f"{codec} {image}",
                                                                         err=True))
    except (ValueError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    for name, value in summary["bd_rate_psnr"].items():
        shown = "n/a" if value is None else f"{value:+.1f} %"
        click.echo(f"BD-rate (PSNR) of vaecodec vs {name}: {shown}")
    click.echo(f"results in {out_dir}")
