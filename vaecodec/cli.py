"""The `vaecodec` command: compress, decompress, info, compare, sample, train, pack-images and
bench.

Every file is handled on its own: a bad one is reported in one line on stderr and the rest are
still processed; the exit status is 1 when anything failed. Outputs are written to a temporary
file beside the target and renamed into place, so an error or an interrupt never leaves a partial
file, and an existing output is only replaced with --force (a FIFO or a device, /dev/stdout …,
is no file to keep: it is written into).
"""

import functools
import importlib.util
import json
import math
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

import click

from . import files, workers
from .bench import CODECS, VAECODEC_QUALITIES
from .bitstream import MAX_PIXELS, METADATA, STRIDE, VERSION, Bitstream
from .errors import CodecError, Note
from .files import Failed, collected_notes, describe
from .images import IMAGE_SUFFIXES, OUTPUT_QUALITY
from .interrupts import shielded
from .rate import MAX_EFFORT

STDIO = Path("-")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaecodec")
def main():
    """vaecodec: a learned image codec (.vae files).

    \b
    Shell completion (bash; zsh and fish likewise, see the README):
      eval "$(_VAECODEC_COMPLETE=bash_source vaecodec)"

    \b
    Examples:
      vaecodec compress photo.jpg                    # photo.vae, quality 75
      vaecodec decompress photo.vae -o photo.png
      vaecodec info photo.vae
      vaecodec compress --help                       # a command's options and examples
    """


_bar_on_screen = False  # a progress bar is on the last line of stderr, a terminal (_progress)


def _say(tag, text):
    """One line on stderr, its tag coloured on a terminal unless NO_COLOR is set; where a
    progress bar is shown, on that line, cleared first (the bar comes back on the next)."""
    if _bar_on_screen:
        click.echo("\r\x1b[K", err=True, nl=False, color=True)
    colour = {"error": "red", "note": "yellow"}.get(tag)
    click.echo(click.style(f"{tag}:", fg=colour, bold=True) + f" {text}", err=True,
               color=False if os.environ.get("NO_COLOR") else None)


def _path(argument):
    """A path given on the command line: `-` is stdin or stdout, and ./- the file named -, which
    Path makes equal to Path("-"), so it is made absolute."""
    path = Path(argument)
    return path.absolute() if path == STDIO and argument != "-" else path


def _stdin_once(arguments):
    """`-` among the inputs at most once: stdin is read to its end by the first."""
    if list(arguments).count("-") > 1:
        raise click.UsageError("- (stdin) can be given only once")


def _expand(inputs, suffixes, recursive=False, verbosity=0, leave_out=None):
    """Files named on the command line, with directories replaced by the files in them that have
    one of `suffixes`, hidden ones left out (such as macOS's ._ files): each with its folder
    relative to the directory named (`.` for a file named itself). With `recursive`, the folders
    within too, but not hidden ones (.thumbnails), `leave_out` (the output folder) nor linked
    ones (a note says how many: a link may lead out of the tree, or back up it); without, a
    note says how many folders were not searched.
    Returns (files, one-line errors for the folders that could not be read)."""
    files, problems = [], []
    left_out = os.path.realpath(leave_out) if leave_out else None

    def unreadable(error):
        problems.append(f"{error.filename}: cannot read ({error.strerror})")

    def note(path, count, what):
        if count and verbosity >= 0:
            _say("note", f"{path}: {count} {what[0] if count == 1 else what[1]}")

    for path in map(_path, inputs):
        if path == STDIO or not path.is_dir():
            files.append((path, Path()))
            continue
        linked = 0
        for folder, subfolders, names in os.walk(path, onerror=unreadable):
            links = [name for name in subfolders if Path(folder, name).is_symlink()]
            linked += len(links)
            subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")
                                   and name not in links
                                   and os.path.realpath(Path(folder, name)) != left_out)
            within = Path(folder).relative_to(path)
            files.extend((Path(folder, name), within) for name in sorted(names)
                         if not name.startswith(".") and Path(name).suffix.lower() in suffixes
                         and Path(folder, name).is_file())
            if not recursive:
                note(path, len(subfolders), ("folder within not searched (-r searches it)",
                                             "folders within not searched (-r searches them)"))
                break
        note(path, linked, ("linked folder not followed", "linked folders not followed"))
    return files, problems


class Plan(NamedTuple):
    """What a command converts: (source, target) pairs, whether they are a batch (a summary and
    a progress bar), how many files --skip-existing left out, one-line errors found while
    planning (folders that could not be read), and the folders to make for the outputs (made
    when the work starts, after every check)."""

    pairs: list
    batch: bool
    skipped: int = 0
    problems: tuple = ()
    folders: tuple = ()


def _plan(inputs, output, suffixes, new_suffix, recursive=False, verbosity=0,
          skip_existing=False, force=False):
    """Pair every input file with its output path.

    One input file: OUTPUT is the file to write (or a directory to write into, or to make where
    it ends with a slash); without it the output goes beside the input. Several inputs or a
    directory: OUTPUT is a directory, in which the folders that `recursive` searched are made
    again. `-` reads stdin / writes stdout. With `skip_existing`, the files whose output exists
    are left out. Nothing is made here: the folders for the outputs are made when the work
    starts (_run), after every check.
    """
    if skip_existing and force:
        raise click.UsageError("give only one of --force and --skip-existing")
    _stdin_once(inputs)
    batch = len(inputs) > 1 or any(p != STDIO and p.is_dir() for p in map(_path, inputs))
    out = _path(output) if output else None
    if batch and out == STDIO:
        raise click.UsageError("cannot write several files to stdout")
    if batch and out is not None and out.exists() and not out.is_dir():
        raise click.UsageError(f"{out}: with several inputs, -o must be a directory")
    # -o newdir/ names a folder, made when the work starts (Path drops the slash)
    into_folder = out not in (None, STDIO) and (batch or out.is_dir()
                                                or output.endswith(("/", os.sep)))
    files, problems = _expand(inputs, suffixes, recursive, verbosity,
                              leave_out=out if into_folder else None)
    pairs, sources = [], {}
    for path, within in files:
        if path == STDIO:
            target = out / f"stdin{new_suffix}" if into_folder else out or STDIO
        elif out is None:
            target = path.with_suffix(new_suffix)
        elif not into_folder:
            target = out
        else:
            target = out / within / (path.stem + new_suffix)
        if target != STDIO and target in sources:
            raise click.UsageError(f"{sources[target]} and {path} would both be written to "
                                   f"{target}")
        sources[target] = path
        pairs.append((path, target))
    left = [pair for pair in pairs if not (skip_existing and _done(*pair, verbosity))]
    # OUTPUT, and in it the folders that --recursive searched
    folders = sorted({out} | {target.parent for _, target in left if target != STDIO}) \
        if into_folder else []
    return Plan(left, batch, len(pairs) - len(left), tuple(problems), tuple(folders))


def _done(source, target, verbosity):
    """Whether --skip-existing leaves this file out: its output is a file already (and not the
    input itself, which _check_target refuses)."""
    if target == STDIO or not target.is_file() or _same_file(source, target):
        return False
    if verbosity > 0:
        click.echo(f"{source}: skipped, {target} exists", err=True)
    return True


def _read(path):
    if path != STDIO:
        return files.read(path)
    if sys.stdin is None:  # closed when the command started (`<&-`)
        raise Failed("stdin is closed")
    return sys.stdin.buffer.read()


def _same_file(source, target):
    """Whether the output `target` (a file that exists) is the input `source` itself."""
    return source != STDIO and target.resolve() == source.resolve()


def _check_target(source, target, force):
    if target == STDIO:
        return
    if target.exists() and _same_file(source, target):
        raise Failed("input and output are the same file")
    if target.is_dir():
        raise Failed(f"output {target} is a directory")
    if target.exists() and not _written_into(target) and not force:
        raise Failed(f"output {target} exists (use --force to overwrite)")


def _written_into(target):
    """An existing output that is written into, never replaced by a rename: a FIFO, a device, or a
    link to an open descriptor (/dev/stdout, /dev/fd/1, /proc/self/fd/1), which leads to where the
    shell sent it, a regular file included (a rename would replace the link)."""
    if not target.is_file():
        return True

    def under_proc(path):
        return Path(os.path.realpath(os.path.dirname(os.path.abspath(path)))).parts[1:2] == (
            "proc",)

    return under_proc(target) or (target.is_symlink() and under_proc(
        os.path.join(os.path.dirname(os.path.abspath(target)), os.readlink(target))))


@contextmanager
def _to_stdout():
    """Writing to stdout: a reader that has gone (`vaecodec info vae/ | head -1`) ends the command
    quietly with status 1, as Unix tools stop."""
    if sys.stdout is None:
        raise Failed("stdout is closed")
    try:
        yield sys.stdout
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        sys.exit(1)


def _write(target, data):
    """Write atomically: a temporary file in the target's directory, then a rename. Shielded from
    signals, so that a kill meanwhile takes effect once the file is in place. A FIFO or a device
    (/dev/stdout …) is written into instead: a rename would put a file in its place."""
    if target == STDIO:
        with _to_stdout() as stdout:
            view = memoryview(data)
            while view:  # a pipe whose reader goes may take part of a write without an error
                view = view[stdout.buffer.write(view):]
            stdout.buffer.flush()
        return
    if target.exists() and _written_into(target):
        _write_into(target, data)
        return
    with shielded():
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as error:
            raise _cannot_write(target, error) from None
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
            os.replace(tmp, target)
        except BaseException as error:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise _cannot_write(target, error) from None
            raise


def _write_into(target, data):
    """Write into a FIFO or a device, as it is (nothing is created). Not shielded from signals:
    a FIFO holds the write until a reader comes, and the command must stay stoppable."""
    try:
        with open(os.open(target, os.O_WRONLY | os.O_TRUNC), "wb") as stream:
            stream.write(data)
    except OSError as error:
        raise _cannot_write(target, error) from None


def _cannot_write(target, error):
    return Failed(f"cannot write {target} ({error.strerror})")


def _run(plan, work, force, verbosity=0, doing="converting"):
    """Apply `work(source, target)` to every pair of the Plan, reporting failures; exit 1 if any
    failed. `work` returns a line saying what it did, shown with --verbose (verbosity 1);
    --quiet (verbosity -1) shows errors only. A batch shows a progress bar labelled with what
    it is `doing` ("compressing")."""
    pairs, batch, skipped, problems, folders = plan
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise click.UsageError(f"cannot create {folder} ({error.strerror})") from None
    for problem in problems:
        _say("error", problem)

    def checked_work(source, target):
        _check_target(source, target, force)
        return work(source, target)

    failed = 0
    shown = batch and len(pairs) > 1 and verbosity == 0
    with _progress(pairs, f"{doing} {len(pairs)} files") if shown else nullcontext(pairs) as items:
        for source, target in items:
            done, said = _attempt(_name(source), functools.partial(checked_work, source, target),
                                  verbosity)
            failed += not done
            if said and verbosity > 0:
                click.echo(f"{_name(source)}: {said}", err=True)
    if batch and (len(pairs) > 1 or skipped or problems) and verbosity >= 0:
        click.echo(f"{len(pairs) - failed} of {len(pairs)} files done"
                   + (f", {failed} failed" if failed else "")
                   + (f", {skipped} skipped (their outputs exist)" if skipped else "")
                   + (f", {len(problems)} folder{'s' * (len(problems) > 1)} unreadable"
                      if problems else ""), err=True)
    if not (pairs or skipped or problems):
        _say("error", "no input files found")
    if failed or problems or not (pairs or skipped):
        sys.exit(1)


def _name(path):
    """How messages name an input."""
    return "<stdin>" if path == STDIO else str(path)


def _attempt(name, action, verbosity=0):
    """(True, what action() returned), its notes shown as lines naming `name`; or (False, None),
    its error shown in one line naming `name`, so that a batch goes on."""
    try:
        with collected_notes() as notes:
            result = action()
    except Exception as error:
        _say("error", f"{name}: {describe(error)}")
        return False, None
    if verbosity >= 0:
        for note in notes:
            _say("note", f"{name}: {note}")
    return True, result


@contextmanager
def _progress(pairs, label):
    """The pairs, shown as a progress bar on stderr as they are worked through (not being a
    terminal, stderr gets the label only, as the work starts)."""
    global _bar_on_screen
    with click.progressbar(pairs, label=label, file=sys.stderr,
                           item_show_func=lambda pair: pair and pair[0].name) as bar:
        _bar_on_screen = sys.stderr.isatty()
        try:
            yield bar
        finally:
            _bar_on_screen = False


def _to_convert(pairs, force):
    """The inputs of the pairs whose output may be written, one by one (_run reports the
    others)."""
    for source, target in pairs:
        try:
            _check_target(source, target, force)
        except Failed:
            continue
        yield source


def _load_codec(pairs, force):
    """The codec, and torch, imported once some file is to be converted (files.codec): here,
    outside the notes collected for each file, so that what torch says as it loads is shown,
    and before Ray or the workers start. Refusals alone (an output in the way, an input that
    is not there) come at once, without it."""
    if any(source == STDIO or source.is_file() for source in _to_convert(pairs, force)):
        files.codec()


def _from_rows(pairs, force, said, start):
    """A `work` for _run that writes each file's output as it comes back from elsewhere (a Ray
    cluster, worker processes), and returns `said(output)`.

    The files whose output may be written (checked here, and again by _run as for a local run)
    are sent at once, `start(paths)`, which gives back their rows (path, output, notes, error)
    in order."""
    sent = set(_to_convert(pairs, force))
    rows = start([os.path.abspath(s) for s, _ in pairs if s in sent]) if sent else iter(())

    def work(source, target):
        if source not in sent:
            raise Failed(f"output {target} was in the way when the run started")
        path = os.path.abspath(source)
        row = next((row for row in rows if row["path"] == path), None)
        if row is None:
            raise Failed("no result came back for it")
        for note in row["notes"]:
            warnings.warn(note, Note)
        if row["error"] is not None:
            raise Failed(row["error"])
        _write(target, row["output"])
        return said(row["output"])

    return work


def _on_ray(pairs, force, address, said, submit):
    """A `work` for _run whose files are read and converted on a Ray cluster, as one Ray Data
    pipeline, `submit(cluster, paths)`; the results are written here."""
    try:
        from . import cluster
    except ImportError:
        _say("error", "--ray needs Ray: pip install 'vaecodec[ray]'")
        sys.exit(1)
    if any(STDIO in pair for pair in pairs):
        raise click.UsageError("--ray works on files, not stdin or stdout")

    def start(paths):
        try:
            cluster.connect(address)
        except Exception as error:
            _say("error", f"cannot join the Ray cluster ({describe(error)})")
            sys.exit(1)
        return cluster.in_order(submit(cluster, paths))

    return _from_rows(pairs, force, said, start)


def _in_workers(pairs, force, said, convert, map_in_workers):
    """A `work` for _run whose files are read and converted by worker processes (workers.py),
    ahead of the writing here."""
    return _from_rows(pairs, force, said, lambda paths: map_in_workers(
        functools.partial(files.converted, convert), paths, files.lost))


def _load_weights():
    """The default weights, loaded before workers are forked (workers.pool's `preload`)."""
    try:
        files.codec().weights.load()
    except CodecError:
        pass  # each file then says so, as without --jobs


_max_pixels = click.option("--max-pixels", type=click.IntRange(min=1), default=MAX_PIXELS,
                           show_default=True,
                           help="Refuse images with more pixels than this, counted after padding "
                                f"to multiples of {STRIDE}.")
_force = click.option("--force", "-f", is_flag=True, help="Overwrite existing output files.")
_skip_existing = click.option("--skip-existing", is_flag=True,
                              help="Leave out the files whose output exists (to resume a batch).")
_output = click.option("-o", "--output", type=click.Path(),
                       help="Output file, or directory when there are several inputs or it ends "
                            "with /.")


def _recursive(writes_outputs=True):
    """-r/--recursive, whose help says where the outputs go for a command that writes them."""
    return click.option("-r", "--recursive", is_flag=True,
                        help="Search the folders within directories too (not hidden ones)"
                             + ("; their outputs go in the same folders under -o."
                                if writes_outputs else "."))


def _finite(context, parameter, value):
    """nan and ±inf are refused before any work: nan passes every range check, inf an open end,
    and either would fail only later, once per file."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _local_options(command):
    """--jobs, --device and --precision: how the files are converted on this machine."""
    command = click.option(
        "--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
        show_default=True, help="Arithmetic of the transforms' inner layers; auto: bf16 on a "
                                "CPU that runs it natively, fp32 on CUDA.")(command)
    command = click.option(
        "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
        show_default=True, callback=_check_device,
        help="Where the transforms and the prior run (auto: CUDA when available); the prior is "
             "exact: any device decodes a file to the same latents.")(command)
    return click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Files converted at once, each in a worker process (e.g. one per "
                             "core).")(command)


def _check_device(context, parameter, device):
    """A device that is not there is a usage error, before any work. auto and cpu always are:
    torch is imported for the first file then, so that a refusal before any (an existing output,
    a missing input) comes at once."""
    if device not in ("auto", "cpu"):
        try:
            files.codec().compute.pick_device(device)
        except CodecError as error:
            raise click.BadParameter(str(error)) from None
    return device


def _ray_options(command):
    """--ray and --ray-address: the work on a Ray cluster, the writing here."""
    command = click.option("--ray-address", metavar="ADDR",
                           help="The Ray cluster to use (implies --ray).")(command)
    return click.option("--ray", "use_ray", is_flag=True,
                        help="Read and convert the files on a Ray cluster ($RAY_ADDRESS, else "
                             "a local one); needs pip install 'vaecodec[ray]'.")(command)


def _verbosity(command):
    """-v/--verbose and --quiet, given to the command as `verbosity`: 1, 0 or -1."""
    @functools.wraps(command)
    def with_verbosity(*args, verbose, quiet, **kwargs):
        return command(*args, verbosity=1 if verbose else -1 if quiet else 0, **kwargs)

    with_verbosity = click.option("--quiet", is_flag=True, help="Show errors only (no progress "
                                  "bar, notes or summary).")(with_verbosity)
    return click.option("-v", "--verbose", is_flag=True,
                        help="Say what was written for each file.")(with_verbosity)


def _batch_options(command):
    """The options compress and decompress share: --force, --skip-existing, --max-pixels,
    --jobs, --device, --precision, --ray, --ray-address, -v and --quiet."""
    for options in (_verbosity, _ray_options, _local_options, _max_pixels, _skip_existing,
                    _force):
        command = options(command)
    return command


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_output
@_recursive()
@click.option("-q", "--quality", type=click.FloatRange(1, 100), callback=_finite,
              help="1 (smallest) to 100 (best), in steps of 0.01.  [default: 75]")
@click.option("--target-bpp", type=click.FloatRange(0, min_open=True), callback=_finite,
              help="Find the quality that gives this many bits per pixel (within 3 %).")
@click.option("--target-psnr", type=click.FloatRange(0, min_open=True), callback=_finite,
              help="Find the quality that gives this PSNR in dB (within 0.1 dB).")
# Up to 2⁵³: the budget is exact in the search's floats, which larger ones would overflow.
@click.option("--max-bytes", type=click.IntRange(1, 2 ** 53),
              help="Find the best quality that fits in this many bytes (and no more than 5 % "
                   "under).")
@click.option("--strict", is_flag=True,
              help="Fail, instead of keeping the nearest file, when a target is out of reach.")
@click.option("--strip", is_flag=True, help="Drop the ICC profile, EXIF and XMP.")
@click.option("-e", "--effort", type=click.IntRange(0, MAX_EFFORT), default=0, show_default=True,
              help="Refine each image's latents (smaller files at the same quality; every level "
                   "adds 6-9 s per megapixel on 2 cores, and each probe of a target search "
                   "pays it). 0: the network alone.")
@_batch_options
def compress(inputs, output, recursive, quality, target_bpp, target_psnr, max_bytes, strict, strip,
             effort, force, skip_existing, max_pixels, jobs, device, precision, use_ray,
             ray_address, verbosity):
    """Compress images (files or directories; - for stdin) to .vae files.

    Give a quality or one target; each file of a batch is searched on its own.

    \b
    Examples:
      vaecodec compress photo.jpg                    # photo.vae, quality 75
      vaecodec compress photo.jpg -q 40 -o small.vae
      vaecodec compress photos/ -o vae/ --target-bpp 0.5
      vaecodec compress photo.png --max-bytes 20000 --strict
      vaecodec compress photo.png -q 90 --effort 3   # smaller, slower
      cat photo.png | vaecodec compress - > photo.vae
    """
    targets = {"target_bpp": target_bpp, "target_psnr": target_psnr, "max_bytes": max_bytes}
    given = (["-q/--quality"] if quality is not None else []) + [
        f"--{name.replace('_', '-')}" for name, value in targets.items() if value is not None]
    if len(given) > 1:
        raise click.UsageError(f"give only one of {' and '.join(given)}")
    if strict and all(value is None for value in targets.values()):
        raise click.UsageError("--strict applies to a target: --target-bpp, --target-psnr or "
                               "--max-bytes")
    options = dict(targets, strict=strict, strip=strip, effort=effort, max_pixels=max_pixels,
                   device=device, precision=precision)

    def said(data):
        stream = Bitstream.from_bytes(data, max_pixels=2 ** 64)
        return (f"{len(data)} bytes, {8 * len(data) / (stream.width * stream.height):.4f} bpp, "
                f"quality {stream.quality:g}")

    def work(source, target):
        data = files.compress(_read(source), quality, **options)
        _write(target, data)
        return said(data)

    plan = _plan(inputs, output, IMAGE_SUFFIXES, ".vae", recursive, verbosity, skip_existing,
                 force)
    pairs = plan.pairs
    _load_codec(pairs, force)
    with workers.pool(jobs, _load_weights) as map_in_workers:
        if use_ray or ray_address:
            work = _on_ray(pairs, force, ray_address, said, lambda cluster, paths:
                           cluster.compress(paths, quality, **options))
        elif jobs > 1 and len(pairs) > 1 and not any(STDIO in pair for pair in pairs):
            convert = functools.partial(files.compress, quality=quality, **options)
            work = _in_workers(pairs, force, said, convert, map_in_workers)
        _run(plan, work, force, verbosity, "compressing")


def _output_format(extension):
    """The Pillow format that writes files with this extension, or a usage error naming those
    that can be written: checked before any work."""
    from .images import writer

    try:
        return writer(extension)
    except CodecError as error:
        raise click.UsageError(str(error)) from None


def _output_suffix(context, parameter, extension):
    """--format as the suffix of the files to write ('.png' …)."""
    if extension is None:
        return None
    suffix = "." + extension.lower().lstrip(".")
    _output_format(suffix)
    return suffix


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_output
@_recursive()
@click.option("--format", "suffix", metavar="EXT", callback=_output_suffix,
              help="What to write (png, jpg, webp, avif, tif …) where no output file name says "
                   "it.  [default: png]")
@click.option("-q", "--quality", type=click.IntRange(1, 100), default=OUTPUT_QUALITY,
              show_default=True, help="Quality of JPEG, WebP and AVIF outputs (JPEG and AVIF "
                                      "keep colour at full resolution: 4:4:4).")
@_batch_options
def decompress(inputs, output, recursive, suffix, quality, force, skip_existing, max_pixels, jobs,
               device, precision, use_ray, ray_address, verbosity):
    """Decompress .vae files to images (format from the output extension or --format, PNG by
    default).

    \b
    Examples:
      vaecodec decompress photo.vae                  # photo.png
      vaecodec decompress photo.vae -o photo.jpg -q 95
      vaecodec decompress vae/ -o png/
      vaecodec decompress -r vae/ -o webp/ --format webp
    """
    def said(data):
        return f"{len(data)} bytes written"

    options = dict(quality=quality, max_pixels=max_pixels, device=device, precision=precision)

    def extension_of(target):
        """What to write: the output file's extension, else --format's ('': PNG)."""
        named = "" if target == STDIO else target.suffix.lower()
        if named and _output_format(named) != _output_format(suffix or named):
            raise click.UsageError(f"{target} is not a {suffix} file: give one of -o and --format")
        return named or suffix or ""

    def work(source, target):
        data = files.decompress(_read(source), extension_of(target), **options)
        _write(target, data)
        return said(data)

    plan = _plan(inputs, output, (".vae",), suffix or ".png", recursive, verbosity, skip_existing,
                 force)
    pairs = plan.pairs
    for _, target in pairs:  # -o against --format, before any work
        extension_of(target)
    # What the workers and Ray write: they convert files only (no stdin or stdout), and _plan
    # pairs one input with one output, or several with files of one suffix.
    extension = next((extension_of(target) for _, target in pairs if target != STDIO), "")
    _load_codec(pairs, force)
    with workers.pool(jobs, _load_weights) as map_in_workers:
        if use_ray or ray_address:
            work = _on_ray(pairs, force, ray_address, said, lambda cluster, paths:
                           cluster.decompress(paths, extension, quality=quality,
                                              max_pixels=max_pixels))
        elif jobs > 1 and len(pairs) > 1 and not any(STDIO in pair for pair in pairs):
            convert = functools.partial(files.decompress, extension=extension, **options)
            work = _in_workers(pairs, force, said, convert, map_in_workers)
        _run(plan, work, force, verbosity, "decompressing")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
@_recursive(writes_outputs=False)
def info(inputs, as_json, recursive):
    """Show the header of .vae files.

    \b
    Examples:
      vaecodec info photo.vae
      vaecodec info --json vae/ | jq .bpp
    """
    def work(source, _):
        data = _read(source)
        stream = Bitstream.from_bytes(data, max_pixels=2 ** 64, max_metadata=2 ** 64)
        fields = {
            "file": _name(source), "format_version": VERSION, "width": stream.width,
            "height": stream.height, "mode": stream.mode, "quality": stream.quality,
            "bytes": len(data), "bpp": round(8 * len(data) / (stream.width * stream.height), 6),
            "model_id": stream.model_id.hex(),
            **{f"{field}_bytes": len(value) for field, value in stream.metadata().items()}}
        metadata = ", ".join(f"{name} {size} bytes" for field, (_, name) in METADATA.items()
                             if (size := fields[f"{field}_bytes"]))
        with _to_stdout():
            click.echo(json.dumps(fields, ensure_ascii=False) if as_json else
                       f"{_name(source)}: {stream.width}×{stream.height} {stream.mode}, "
                       f"quality {stream.quality:g}, {len(data)} bytes, {fields['bpp']:.4f} bpp, "
                       f"model {stream.model_id.hex()}" + (f", {metadata}" if metadata else ""))

    _stdin_once(inputs)
    found, problems = _expand(inputs, (".vae",), recursive)
    _run(Plan([(path, STDIO) for path, _ in found], False, problems=tuple(problems)), work,
         force=True)


def _crop(context, parameter, text):
    """--crop's form, checked before anything is read (whether the box fits, once the image is)."""
    from .compare import parse_crop

    if text is None:
        return None
    try:
        parse_crop(text, (math.inf, math.inf))  # a box of the right form fits so large an image
    except CodecError:
        raise click.BadParameter("expected X,Y,W,H in pixels (X and Y from 0, W and H from 1), "
                                 f"got {text!r}") from None
    return text


@main.command()
@click.argument("original", type=click.Path())
@click.argument("file", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The picture to write: PNG, or what its extension names (JPEG, WebP, AVIF, "
                   "TIFF …, as decompress writes).")
@click.option("--crop", metavar="X,Y,W,H", callback=_crop,
              help="Show only this part of the images (pixels).")
@_force
@_max_pixels
def compare(original, file, output, crop, force, max_pixels):
    """Original | decoded FILE | error map, side by side, captioned with the file's bpp and the
    PSNR and MS-SSIM of the whole decoded image.

    FILE is a .vae file, or any image Pillow reads (e.g. a WebP or AVIF to set beside it).

    \b
    Examples:
      vaecodec compare photo.png photo.vae -o side.png
      vaecodec compare photo.png photo.vae -o detail.png --crop 200,100,256,192
    """
    from .compare import parse_crop, side_by_side
    from .images import encode_image, read_image

    _stdin_once((original, file))
    if output.endswith(("/", os.sep)):
        raise click.UsageError("-o names the picture to write, not a folder")
    reference_path, picture_path = _path(original), _path(output)
    _output_format(picture_path.suffix)
    files.lift_pillows_size_limit()

    def read_reference():
        if picture_path.exists() and _same_file(reference_path, picture_path):
            raise Failed("input and output are the same file")
        return read_image(_read(reference_path), max_pixels)

    read, reference = _attempt(_name(reference_path), read_reference)
    if not read:
        sys.exit(1)

    def work(source, target):
        data = _read(source)
        decoded = read_image(data, max_pixels)
        box = parse_crop(crop, reference.size) if crop else None
        picture = side_by_side(reference, decoded, len(data), source.name, box)
        _write(target, encode_image(picture, target.suffix))

    _run(Plan([(_path(file), picture_path)], False), work, force)


def _size(text):
    """'WxH' → (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
        if width >= 1 and height >= 1:
            return width, height
    except ValueError:
        pass
    raise click.BadParameter(f"expected WIDTHxHEIGHT, e.g. 512x512, got {text!r}")


@main.command()
@click.option("-n", "count", type=click.IntRange(min=1), default=4, show_default=True,
              help="How many images.")
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder for sample-1.png, sample-2.png, …")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The same seed draws the same images.")
@click.option("--size", default="512x512", show_default=True, callback=lambda c, p, v: _size(v),
              help="WIDTHxHEIGHT of each image.")
@click.option("-q", "--quality", type=click.FloatRange(1, 100), default=75, show_default=True,
              callback=_finite, help="The quality whose gains decode the latents.")
@_force
@_max_pixels
@_verbosity
def sample(count, output, seed, size, quality, force, max_pixels, verbosity):
    """Draw latents from the model's learned prior and decode them: the generative use of the
    VAE. What comes out are textures with the local statistics of photographs (edges, grain,
    colour patches), not photographs: the prior models each latent from its neighbourhood only.

    \b
    Examples:
      vaecodec sample -n 4 -o samples/
      vaecodec sample -n 1 -o samples/ --seed 7 --size 768x512 -q 30
    """
    from .bitstream import check_size
    from .images import encode_image
    from .sample import sample as draw
    from PIL import Image

    try:
        check_size(*size, max_pixels)
    except CodecError as error:
        raise click.BadParameter(str(error), param_hint="--size") from None
    folder = Path(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.UsageError(f"cannot create {folder} ({error.strerror})") from None

    def work(source, target):
        index = int(source.name.rsplit("-", 1)[1])
        pixels = draw(*size, quality, [seed, index])
        _write(target, encode_image(Image.fromarray(pixels), ".png"))
        return f"written to {target}"

    pairs = [(Path(f"sample-{i}"), folder / f"sample-{i}.png") for i in range(1, count + 1)]
    _run(Plan(pairs, count > 1), work, force, verbosity, "drawing")


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True,
              help="Resumable training state (created if missing).")
@click.option("--export", type=click.Path(dir_okay=False),
              help="Write the codec's weights file here when done (e.g. weights/vaecodec.pt).")
@click.option("--steps", type=click.IntRange(min=1), default=30000, show_default=True,
              help="Total steps, counting those already in the checkpoint.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), callback=_finite,
              help="Stop after this much wall time (this run).")
@click.option("--lr", type=float, default=5e-4, show_default=True, callback=_finite,
              help="Peak learning rate.")
@click.option("--decay", type=click.FloatRange(0, 1, min_open=True), default=0.2,
              show_default=True, callback=_finite,
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
@click.option("--hyper", callback=lambda ctx, param, value: _integers(value),
              help="Hidden widths of the hyper-synthesis, comma-separated (new runs only; "
                   "default: N,N).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Start a new run from this weights file instead of random weights.")
@click.option("--widen", is_flag=True,
              help="With --init: start a model of --channels, --latents, --groups and --hyper "
                   "that computes what the init model does: its channels copied (its channel "
                   "groups to the last groups), the new ones silent until training uses them.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
              show_default=True,
              help="Arithmetic of the transforms (the prior and rates are always fp32); auto: "
                   "bf16 where the hardware runs it natively.")
@click.option("--compile", "compile_", type=click.Choice(["auto", "on", "graphs", "off"]),
              default="auto", show_default=True,
              help="torch.compile the training pass; auto: on CUDA; graphs: also as CUDA graphs.")
def train(data_dir, checkpoint, export, steps, minutes, lr, decay, batch_size, crop, n, m,
          groups, hyper, init, widen, precision, compile_):
    """Train the model on a folder of images (CUDA when available). Run the same command again
    to resume from the checkpoint.

    \b
    Examples:
      vaecodec train photos/ --checkpoint run.ckpt --minutes 60 --export run.pt
      vaecodec train photos/ --checkpoint run2.ckpt --init weights/vaecodec.pt --lr 1e-4
    """
    from .train import train as run

    if widen and not init:
        raise click.UsageError("--widen needs --init (the model to start from)")
    try:
        run(data_dir, checkpoint, steps, minutes, batch_size=batch_size, crop=crop, lr=lr,
            decay=decay, n=n, m=m, groups=groups, hyper=hyper, init=init, widen=widen,
            precision=precision, compile=compile_, export=export,
            log=lambda line: click.echo(line, err=True))
    except (ValueError, OSError) as error:
        _say("error", str(error))
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


def _qualities(value):
    """--qualities as numbers from 1 to 100 (None stays None)."""
    if value is None:
        return None
    try:
        qualities = [float(part) for part in value.split(",")]
    except ValueError:
        qualities = []
    if not qualities or not all(1 <= quality <= 100 for quality in qualities):  # nan fails too
        raise click.BadParameter(f"expected qualities from 1 to 100 separated by commas, got "
                                 f"{value!r}")
    return qualities


@main.command("pack-images")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder for the packed images.")
@click.option("--format", "format_", type=click.Choice(["avif", "jpeg"]), default="avif",
              show_default=True, help="AVIF: cleaner photos per byte (the training machine's "
                                      "Pillow must read it).")
@click.option("--quality", type=click.IntRange(1, 100),
              help="Encoder quality (default: 90 for AVIF, 94 for JPEG).")
def pack_images(data_dir, output, format_, quality):
    """Write a compact copy (4:4:4) of a training folder as training sees it: downscaled, small
    images left out. For training machines that take few megabytes.

    \b
    Examples:
      vaecodec pack-images photos/ -o pack/            # AVIF at quality 90
      vaecodec pack-images photos/ -o pack/ --format jpeg
    """
    from .train import pack_training_images

    try:
        count = pack_training_images(data_dir, output, format_, quality)
    except (ValueError, OSError) as error:
        _say("error", str(error))
        sys.exit(1)
    click.echo(f"{count} images in {output}", err=True)


@main.command()
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for results.json, results.md and rd.png.")
@click.option("--codecs", default=",".join(CODECS), show_default=True,
              help="Comma-separated subset of the codecs.")
@click.option("--qualities", callback=lambda context, parameter, value: _qualities(value),
              help="Comma-separated vaecodec qualities (default: "
                   f"{','.join(map(str, VAECODEC_QUALITIES))}).")
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("-e", "--effort", type=click.IntRange(0, MAX_EFFORT), default=0, show_default=True,
              help="vaecodec's compress --effort.")
def bench(images_dir, out_dir, codecs, qualities, max_images, effort):
    """Rate–distortion benchmark against JPEG, WebP, AVIF, JPEG XL and JPEG 2000.

    \b
    Examples:
      vaecodec bench kodak/ -o results/
      vaecodec bench kodak/ -o effort3/ --codecs vaecodec,avif --max-images 6 -e 3
    """
    from . import bench as benchmark

    names = [c.strip() for c in codecs.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CODECS))
    if unknown:
        raise click.UsageError(f"unknown codecs {', '.join(unknown)}; "
                               f"choose from {', '.join(CODECS)}")
    if set(names) - {"vaecodec"} and importlib.util.find_spec("imagecodecs") is None:
        _say("error", "imagecodecs not installed; pip install 'vaecodec[bench]'")
        sys.exit(1)
    try:
        summary = benchmark.run(images_dir, out_dir, names, qualities, max_images,
                                progress=lambda codec, image: click.echo(f"{codec} {image}",
                                                                         err=True),
                                effort=effort)
    except (ValueError, OSError) as error:
        _say("error", str(error))
        sys.exit(1)
    for name, value in summary["bd_rate_psnr"].items():
        shown = "n/a" if value is None else f"{value:+.1f} %"
        click.echo(f"BD-rate (PSNR) of vaecodec vs {name}: {shown}")
    click.echo(f"results in {out_dir}")
