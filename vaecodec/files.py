"""One file's bytes to another's, as `vaecodec compress` and `decompress` do them: the part of the
work that runs wherever the file is processed, in this process or on a Ray worker, so that both
make the same bytes and the same one-line messages."""

import gc
import warnings
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from .bitstream import MAX_PIXELS
from .errors import CodecError, Note
from .images import OUTPUT_QUALITY, encode_image


class Failed(Exception):
    """A per-file failure whose message is already user-facing."""


def read(path):
    """The bytes of the file at `path`, or Failed with a message saying why not."""
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise Failed("is a directory, expected a file") from None
    except FileNotFoundError:
        raise Failed("no such file") from None
    except OSError as error:
        raise Failed(f"cannot read ({error.strerror})") from None


def compress(data, quality=None, max_pixels=MAX_PIXELS, **options):
    """Image file bytes (or an H×W[×C] uint8 array) → `.vae` bytes; `options` are
    `codec.compress`'s (target_bpp, target_psnr, max_bytes, strict, strip, effort, device,
    precision)."""
    lift_pillows_size_limit()
    # The codec decodes the file itself: a decoded image passed from here would stay referenced
    # by this call until it returned (72 MB of a 24 MP photo beside the codec's own copy).
    return codec().compress(data, quality, max_pixels=max_pixels, **options)


@cache
def codec():
    """vaecodec.codec, imported where a command first needs torch (`info` and `--help` do not).

    Importing torch adds about 150 000 objects for Python's collector to track, and little
    garbage (about 0.6 MB), yet the collector went over them in full three times, during the
    import and once more just after it: 0.2 s of a 1.5 s command. So the import runs without the
    collector (the caller's setting is restored after it), and in the command's processes (its
    own, its workers, Ray's) every object then alive, about 240 000, is frozen out of later
    collections, which still find new garbage. Forked workers inherit them frozen, so their
    collections do not copy those pages either.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        from . import codec as module
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    return module


def lift_pillows_size_limit():
    """In the command's processes (its own, its workers, Ray's), --max-pixels alone limits the
    images read: Pillow's decompression-bomb check gives way to the codec's, which reads the size
    from the header too, before any pixels are allocated. The library leaves Pillow's limit to
    the program that imports it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None


def decompress(data, extension, quality=OUTPUT_QUALITY, max_pixels=MAX_PIXELS, **options):
    """`.vae` bytes → image file bytes in the format of `extension` ('.png', '.jpg' …; '' is
    PNG), JPEG, WebP and AVIF at `quality`; `options` are `codec.decompress`'s (device,
    precision)."""
    image = codec().decompress(data, max_pixels=max_pixels, **options)
    return encode_image(image, extension, quality)


def converted(convert, path):
    """The file at `path` converted, as a worker process (--jobs) gives it back: its path, the
    output (None when it failed), its notes and its one-line error (None when it did not)."""
    try:
        with collected_notes() as notes:
            output = convert(read(Path(path)))
        return _row(path, output, notes)
    except Exception as error:
        return _row(path, error=describe(error))


def lost(path):
    """What stands for the file at `path` when the worker process converting it died: the
    kernel's OOM killer, most likely, where each worker holds about 0.5 GB."""
    return _row(path, error="worker process died (out of memory?)")


def _row(path, output=None, notes=(), error=None):
    return {"path": path, "output": output, "notes": notes, "error": error}


@contextmanager
def collected_notes():
    """Collects the notes (errors.Note: a conversion, a rate target out of reach) raised inside
    as strings, in the list it yields, once the block has finished without an error."""
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Note)
        yield notes
    notes.extend(str(note.message) for note in caught if issubclass(note.category, Note))


def describe(error):
    """The one-line message for a file that failed with `error`."""
    if isinstance(error, (Failed, CodecError)):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory (try a smaller image)"
    first_line = next(iter(str(error).splitlines()), "")
    return f"internal error ({type(error).__name__}: {first_line})"  # a bug: still one line
