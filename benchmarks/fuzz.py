"""Fuzz the decoder with hostile `.vae` files.

Every case mutates a valid file (bit flips, truncation, random bytes, trailing garbage, header
fields rewritten with a valid CRC, random entropy-coded sections or metadata (ICC profile, EXIF,
XMP, raw chunk structure) behind a valid header) and decodes it. A case passes when decoding returns
an image of the size the header states or raises CodecError, within the time limit; every 10th
case also goes through the CLI, into PNG, JPEG, TIFF or WebP (each writes the metadata its own
way), which must exit 1 with one `error:` line, no traceback and no output file.

    python benchmarks/fuzz.py --cases 10000      # the long run; the test suite runs a few hundred
"""

import random
import signal
import struct
import zlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import click
from click.testing import CliRunner

import vaecodec
from vaecodec.bitstream import METADATA, OVERHEAD, Bitstream
from vaecodec.cli import main as cli

TIME_LIMIT_S = 20
CLI_OUTPUTS = (".png", ".jpg", ".tif", ".webp")


def base_files():
    """A few small valid files of every mode."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-3, 4, (30, 40, 4)), axis=1).clip(0, 255).astype(np.uint8) + 60
    files = [vaecodec.compress(smooth[:, :, :3], 50), vaecodec.compress(smooth[:20, :33], 10),
             vaecodec.compress(smooth[:9, :17, 0], 90), vaecodec.compress(smooth[:1, :1, :2], 1)]
    stream = Bitstream.from_bytes(files[0])
    with_metadata = {**vars(stream), "icc_profile": bytes(range(200)), "exif": b"MM\0*" + bytes(60),
                     "xmp": b"<x:xmpmeta/>"}
    return files + [Bitstream(**with_metadata).to_bytes()]


def _rewrite(data, rng):
    stream = Bitstream.from_bytes(data)
    fields = {name: getattr(stream, name) for name in stream.__dataclass_fields__}
    choice = rng.randrange(7)
    if choice == 0:
        fields["width"], fields["height"] = rng.choice(
            [(rng.randrange(1, 200), rng.randrange(1, 200)), (100000, 100000),
             (2 ** 32 - 1, 1), (2 ** 26, 1), (1, 2 ** 20), (rng.randrange(1, 10), rng.randrange(1, 10))])
    elif choice == 1:
        fields["mode"] = rng.choice(["L", "LA", "RGB", "RGBA"])
    elif choice == 2:
        fields["quality"] = rng.randrange(100, 10001) / 100
    elif choice == 3:
        fields["model_id"] = rng.randbytes(8)
    elif choice == 4:
        fields["y"] = rng.randbytes(4 * rng.randrange(0, 64))
        fields["z"] = rng.choice([fields["z"], rng.randbytes(4 * rng.randrange(0, 8))])
    elif choice == 5:
        fields[rng.choice(list(METADATA))] = rng.randbytes(rng.choice([0, 1, 300, 70000]))
    else:
        fields["alpha"] = rng.randbytes(rng.randrange(0, 40))
        fields["mode"] = rng.choice(["LA", "RGBA"])
    try:
        return Bitstream(**fields).to_bytes()
    except Exception:  # a field combination the writer itself rejects: fall back to flips
        return _flip(data, rng)


def _metadata_section(data, rng):
    """The file with its metadata section replaced by raw, mostly malformed chunks, behind valid
    lengths and CRC."""
    stream = Bitstream.from_bytes(data)
    chunks = []
    for _ in range(rng.randrange(0, 4)):
        tag = rng.choice([b"ICCP", b"EXIF", b"XMP ", rng.randbytes(4)])
        body = rng.randbytes(rng.randrange(0, 50))
        length = rng.choice([len(body), len(body) + rng.randrange(1, 100), 2 ** 32 - 1])
        chunks.append(tag + struct.pack(">I", length) + body)
    section = b"".join(chunks) + rng.choice([b"", rng.randbytes(rng.randrange(1, 8))])
    header_size = OVERHEAD - 4
    header = data[:24] + struct.pack(">I", len(section)) + data[28:header_size]
    body = header + section + data[header_size + len(stream.metadata_section()):-4]
    return body + struct.pack(">I", zlib.crc32(body))


def _flip(data, rng):
    damaged = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def mutate(data, rng):
    """One hostile variant of a valid file."""
    kind = rng.randrange(7)
    if kind == 6:
        return _metadata_section(data, rng)
    if kind == 0:
        return _flip(data, rng)
    if kind == 1:
        return data[:rng.randrange(len(data))]
    if kind == 2:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 3:
        return data + rng.randbytes(rng.randrange(1, 20))
    return _rewrite(data, rng)


class Hang(BaseException):  # not an Exception, so that no `except Exception` can swallow it
    pass


def _alarm(signum, frame):
    raise Hang


def run(cases, seed=0, cli_every=10, log=None):
    """Fuzz `cases` cases; returns the tallies (all failure counts should be 0)."""
    rng = random.Random(seed)
    bases = base_files()
    tally = {"cases": 0, "decoded": 0, "codec_error": 0, "crashes": 0, "hangs": 0,
             "cli_cases": 0, "cli_tracebacks": 0, "cli_bad_exit": 0, "cli_internal_errors": 0,
             "partial_files": 0,
             "max_seconds": 0.0}
    failures = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    workdir = Path(tempfile.mkdtemp(prefix="vaecodec-fuzz-"))
    try:
        for case in range(cases):
            data = mutate(rng.choice(bases), rng)
            tally["cases"] += 1
            start = time.perf_counter()
            signal.alarm(TIME_LIMIT_S)
            try:
                image = vaecodec.decompress(data)
                stream = Bitstream.from_bytes(data)
                tally["decoded"] += 1
                if image.size != (stream.width, stream.height):
                    raise AssertionError(f"decoded {image.size}, header says "
                                         f"{stream.width}×{stream.height}")
            except vaecodec.CodecError:
                tally["codec_error"] += 1
            except Hang:
                tally["hangs"] += 1
                failures.append((case, "hang", data))
            except Exception as error:  # noqa: BLE001 — this is what the fuzzer looks for
                tally["crashes"] += 1
                failures.append((case, repr(error), data))
            finally:
                signal.alarm(0)
            tally["max_seconds"] = max(tally["max_seconds"], time.perf_counter() - start)
            if case % cli_every == 0:
                _check_cli(data, workdir / f"case{rng.choice(CLI_OUTPUTS)}", tally)
            if log and (case + 1) % 1000 == 0:
                log(f"{case + 1} cases: {tally}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    return tally, failures


def _check_cli(data, target, tally):
    """Decode through the CLI into `target`: a failure must be one error line, exit 1, and leave
    no file."""
    workdir = target.parent
    source = workdir / "case.vae"
    source.write_bytes(data)
    target.unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["decompress", str(source), "-o", str(target)])
    tally["cli_cases"] += 1
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tally["cli_tracebacks"] += 1
    if result.exit_code == 0:
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.exit_code != 1 or len(errors) != 1:
        tally["cli_bad_exit"] += 1
    if any("internal error" in line for line in errors):  # files.describe's form of a bug
        tally["cli_internal_errors"] += 1
    if target.exists() or any(p.suffix == ".tmp" for p in workdir.iterdir()):
        tally["partial_files"] += 1


@click.command()
@click.option("--cases", default=10000, show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(cases, seed):
    """Run the fuzzer and print the tallies; exit 1 if anything failed."""
    start = time.perf_counter()
    tally, failures = run(cases, seed, log=lambda line: print(line, file=sys.stderr))
    tally["seconds"] = round(time.perf_counter() - start, 1)
    print(tally)
    for case, what, data in failures[:10]:
        print(f"case {case}: {what}: {data[:64].hex()}…")
    sys.exit(1 if failures or tally["cli_tracebacks"] or tally["cli_bad_exit"]
             or tally["cli_internal_errors"] or tally["partial_files"] else 0)


if __name__ == "__main__":
    main()
