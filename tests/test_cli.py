"""The vaecodec command, driven through click's test runner."""

import contextlib
import gc
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vaecodec
from vaecodec.bitstream import Bitstream
from vaecodec import files
from vaecodec.cli import main


@pytest.fixture
def folder(tmp_path, photo):
    photo.save(tmp_path / "a.png")
    photo.convert("L").save(tmp_path / "b.jpg", quality=95)
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors and "Traceback" not in result.output
    for fragment in fragments:
        assert any(fragment in line for line in errors), lines


def test_compress_then_decompress(folder):
    original = (folder / "a.png").read_bytes()
    assert run("compress", folder / "a.png", "-q", 40).exit_code == 0
    assert Bitstream.from_bytes((folder / "a.vae").read_bytes()).quality == 40
    assert run("decompress", folder / "a.vae", "-o", folder / "out.png").exit_code == 0
    assert Image.open(folder / "out.png").size == Image.open(folder / "a.png").size
    assert (folder / "a.png").read_bytes() == original


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o027, 0o640)])
def test_outputs_are_written_beside_their_target_with_the_usual_permissions(folder, umask,
                                                                             mode):
    """The temporary file is made in the target's folder (a rename across file systems fails),
    and given what the user's umask gives a new file (mkstemp makes it 0600)."""
    script = ("import os, sys; from vaecodec.__main__ import main; replace = os.replace; "
              "os.replace = lambda a, b: (print(os.path.dirname(a)), replace(a, b)); "
              "sys.argv = ['vaecodec', 'compress', sys.argv[1]]; main()")
    done = subprocess.run([sys.executable, "-c", script, str(folder / "a.png")],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(umask))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder)
    assert os.stat(folder / "a.vae").st_mode & 0o777 == mode


def test_version_is_the_packages_in_the_command_and_the_module():
    import re
    from pathlib import Path

    import vaecodec

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)
    assert vaecodec.__version__ == version
    command = subprocess.run([sys.executable, "-m", "vaecodec", "--version"], capture_output=True,
                             text=True, check=True)
    assert command.stdout == f"vaecodec, version {version}\n"


def test_compress_codes_without_the_decoded_file_held(folder, monkeypatch):
    """When the latents are coded, the command holds no decoded image beside the codec's own
    pixels (the decoded copy of a 24 MP photo is 72 MB)."""
    from vaecodec import codec

    def images():
        return {id(o) for o in gc.get_objects() if issubclass(type(o), Image.Image)}

    held, before, at_quality = [], images(), codec.at_quality  # the fixture's photo among them

    def spy(*args, **kwargs):
        held.extend(images() - before)
        return at_quality(*args, **kwargs)

    monkeypatch.setattr(codec, "at_quality", spy)
    assert run("compress", folder / "a.png").exit_code == 0
    assert held == []


@pytest.mark.parametrize("name, fmt", [("c.jpg", "JPEG"), ("c.TIF", "TIFF"), ("c.webp", "WEBP"),
                                       ("c.avif", "AVIF")])
def test_output_format_follows_extension(folder, name, fmt):
    run("compress", folder / "a.png")
    assert run("decompress", folder / "a.vae", "-o", folder / name).exit_code == 0
    assert Image.open(folder / name).format == fmt


def test_a_directory_of_avif_photos_is_compressed(tmp_path, photo):
    photo.save(tmp_path / "a.avif", quality=90)
    (tmp_path / "notes.txt").write_text("not an image")
    assert run("compress", tmp_path, "-o", tmp_path / "out").exit_code == 0
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["a.vae"]


def test_existing_output_is_refused_without_force(folder):
    (folder / "a.vae").write_bytes(b"keep me")
    result = run("compress", folder / "a.png")
    assert_one_line_error(result, "a.vae exists", "--force")
    assert (folder / "a.vae").read_bytes() == b"keep me"
    assert run("compress", folder / "a.png", "--force").exit_code == 0
    assert (folder / "a.vae").read_bytes() != b"keep me"


def test_batch_over_a_directory_goes_on_after_a_bad_file(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run("compress", folder, "-o", folder / "out")
    assert_one_line_error(result, "broken.png", "not a readable image")
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a.vae", "b.vae"]
    assert "2 of 3 files done, 1 failed" in result.stderr
    result = run("decompress", folder / "out", "-o", folder / "png")
    assert result.exit_code == 0
    assert Image.open(folder / "png" / "b.png").mode == "L"


def test_stdin_to_stdout(folder):
    result = run("compress", "-", input=(folder / "a.png").read_bytes())
    assert result.exit_code == 0
    back = run("decompress", "-", input=result.stdout_bytes)
    assert back.exit_code == 0 and back.stdout_bytes.startswith(b"\x89PNG")


def test_the_command_delivers_its_output_and_status_as_it_exits(folder):
    """The entry point skips the interpreter's teardown (`__main__._exit`): what it wrote to a
    pipe must still all arrive, and a failure must still exit with 1."""
    command = [sys.executable, "-m", "vaecodec"]
    made = subprocess.run([*command, "compress", "-"], input=(folder / "a.png").read_bytes(),
                          capture_output=True, timeout=120)
    assert made.returncode == 0 and Bitstream.from_bytes(made.stdout).width == 128
    back = subprocess.run([*command, "decompress", "-"], input=made.stdout, capture_output=True,
                          timeout=120)
    assert back.returncode == 0 and back.stdout.startswith(b"\x89PNG") and back.stdout.endswith(
        b"IEND\xaeB`\x82")
    failed = subprocess.run([*command, "compress", str(folder / "missing.png")],
                            capture_output=True, timeout=120)
    assert failed.returncode == 1 and failed.stderr.decode().splitlines() == [
        f"error: {folder / 'missing.png'}: no such file"]


@pytest.mark.parametrize("name,content,message", [
    ("missing.png", None, "no such file"),
    ("empty.png", b"", "not a readable image"),
    ("text.png", b"hello", "not a readable image"),
])
def test_bad_inputs_give_one_line(folder, name, content, message):
    if content is not None:
        (folder / name).write_bytes(content)
    result = run("compress", folder / name)
    assert_one_line_error(result, name, message)
    assert not (folder / name).with_suffix(".vae").exists()


def test_truncated_png_is_refused(folder):
    data = (folder / "a.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("compress", folder / "cut.png"), "cut.png", "not a readable image")


def test_same_file_as_input_and_output_is_refused(folder):
    result = run("compress", folder / "a.png", "-o", folder / "a.png", "--force")
    assert_one_line_error(result, "same file")


def test_unwritable_output_leaves_nothing(folder):
    result = run("compress", folder / "a.png", "-o", folder / "no" / "such" / "dir.vae")
    assert_one_line_error(result, "cannot write")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg"]


def test_colliding_outputs_are_refused_before_any_work(folder):
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes())
    result = run("compress", folder, "-o", folder / "out")
    assert result.exit_code == 2 and "would both be written to" in result.output
    assert not (folder / "out").exists()  # checked before any folder is made


def test_stdin_into_a_directory(folder):
    (folder / "out").mkdir()
    result = run("compress", "-", "-o", folder / "out", input=(folder / "a.png").read_bytes())
    assert result.exit_code == 0 and (folder / "out" / "stdin.vae").exists()


def test_corrupt_vae_leaves_no_output(folder):
    run("compress", folder / "a.png")
    data = bytearray((folder / "a.vae").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "bad.vae").write_bytes(bytes(data))
    assert_one_line_error(run("decompress", folder / "bad.vae"), "bad.vae", "CRC-32")
    assert not (folder / "bad.png").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_pixel_limit_flag(folder):
    result = run("compress", folder / "a.png", "--max-pixels", 100)
    assert_one_line_error(result, "exceeds the limit of 100 pixels")


def test_info_shows_header(folder):
    run("compress", folder / "a.png", "-q", 33)
    result = run("info", folder / "a.vae")
    assert result.exit_code == 0
    size = (folder / "a.vae").stat().st_size
    assert f"128×96 RGB, quality 33, {size} bytes" in result.stdout
    assert f"{8 * size / (128 * 96):.4f} bpp" in result.stdout


def test_verbose_says_what_each_file_gave_without_a_progress_bar(folder):
    result = run("compress", folder, "-o", folder / "out", "-v")
    assert result.exit_code == 0 and "compressing 2 files" not in result.stderr
    assert re.search(r"a.png: \d+ bytes, [\d.]+ bpp, quality 75", result.stderr)


@pytest.mark.parametrize("raised,message", [
    (MemoryError(), "out of memory (try a smaller image)"),
    (DeprecationWarning("a library's own warning"), None),
])
def test_what_a_file_raises_or_warns_is_told_as_users_need(folder, monkeypatch, raised, message):
    """Running out of memory says what to do; a warning that is not a vaecodec note (a
    library's deprecation) is no `note:` line."""
    compress = files.compress

    def raising(*args, **kwargs):
        if isinstance(raised, Warning):
            warnings.warn(raised)
            return compress(*args, **kwargs)
        raise raised

    monkeypatch.setattr(files, "compress", raising)
    result = run("compress", folder / "a.png")
    if message:
        assert_one_line_error(result, f"a.png: {message}")
    else:
        assert result.exit_code == 0 and "note:" not in result.stderr


def test_info_reads_stdin_once_and_names_it_as_errors_do(folder):
    run("compress", folder / "a.png", "-q", 33)
    data = (folder / "a.vae").read_bytes()
    assert run("info", "-", input=data).stdout.startswith("<stdin>: 128×96 RGB, quality 33")
    result = run("info", "-", "-", input=data)
    assert result.exit_code == 2 and "- (stdin) can be given only once" in result.stderr
    assert_one_line_error(run("info", "-", input=b"junk"), "<stdin>: not a vaecodec file")


def test_conversion_note_goes_to_stderr(folder):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "CMYK").save(folder / "c.tif")
    result = run("compress", folder / "c.tif")
    assert result.exit_code == 0
    assert "note:" in result.stderr and "converted CMYK image to RGB" in result.stderr


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp", ".tif"])
def test_animations_and_pages_keep_their_first_frame_with_a_note(folder, suffix):
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "lime", "blue")]
    frames[0].save(folder / f"moving{suffix}", save_all=True, append_images=frames[1:])
    result = run("compress", folder / f"moving{suffix}")
    assert result.exit_code == 0
    assert f"note: {folder / f'moving{suffix}'}: only the first of 3 frames kept" in result.stderr
    assert run("decompress", folder / "moving.vae", "-o", folder / "first.png").exit_code == 0
    assert Image.open(folder / "first.png").getpixel((30, 20))[0] > 200  # red


def test_interrupt_while_writing_leaves_nothing(folder, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("vaecodec.cli.os.replace", interrupted)
    result = run("compress", folder / "a.png")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_kill_gives_a_clean_exit(folder, jobs):
    big = folder / "big"
    big.mkdir()
    for i in range(4):
        Image.open(folder / "a.png").resize((768, 512)).save(big / f"{i}.png")
    process = subprocess.Popen([sys.executable, "-m", "vaecodec", "compress", str(big),
                                "--jobs", str(jobs)], stderr=subprocess.PIPE)
    assert process.stderr.readline() == b"compressing 4 files\n"  # the work has begun
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr.strip() == b"Aborted!"
    assert not [p for p in big.iterdir() if p.suffix != ".png"]


# Runs the command with a signal sent to itself at a chosen moment: while click is imported,
# while the output file is being renamed into place (or failing to be), once the command has
# finished, as the process exits, or twice, the second while the first is handled.
SIGNAL_AT = """
import os, signal, sys
moment, argv = sys.argv[1], sys.argv[2:]

def kill():
    os.kill(os.getpid(), signal.SIGTERM)

if moment == "import":
    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "click":
                kill()
    sys.meta_path.insert(0, Finder())
elif moment == "rename":
    replace = os.replace
    os.replace = lambda *args: (kill(), replace(*args))
elif moment == "failed rename":  # the signal comes as the rename fails: the disk is full
    def replace(*args):
        kill()
        raise OSError(28, "No space left on device")
    os.replace = replace
elif moment == "exit":  # as the exit handlers run: the outcome is settled
    import atexit
    atexit.register(kill)
elif moment == "twice":  # a second signal while the first one's clean-up is stuck
    import click, time

    def invoke(*args):
        try:
            kill()
        except KeyboardInterrupt:
            kill()
            time.sleep(600)

    click.Group.invoke = invoke
elif moment == "end":
    import click
    invoke = click.Group.invoke
    click.Group.invoke = lambda *args: (invoke(*args), kill())[0]
sys.argv = ["vaecodec", *argv]
from vaecodec.__main__ import main
main()
"""


@pytest.mark.parametrize("moment,written", [("import", False), ("rename", True),
                                            ("failed rename", False), ("end", True)])
def test_kill_at_any_moment_gives_one_line_and_whole_files(folder, moment, written):
    result = subprocess.run([sys.executable, "-c", SIGNAL_AT, moment, "compress",
                             str(folder / "a.png")], capture_output=True, timeout=60)
    assert result.returncode == 1 and result.stderr.strip() == b"Aborted!"
    assert sorted(p.name for p in folder.iterdir()) == \
        (["a.png", "a.vae", "b.jpg"] if written else ["a.png", "b.jpg"])
    if written:  # the signal was held back until the file was complete and in place
        assert Bitstream.from_bytes((folder / "a.vae").read_bytes()).width == 128


def test_a_signal_once_the_outcome_is_settled_changes_nothing(folder):
    result = subprocess.run([sys.executable, "-c", SIGNAL_AT, "exit", "compress",
                             str(folder / "a.png")], capture_output=True, timeout=120)
    assert (result.returncode, result.stderr) == (0, b"")
    assert Bitstream.from_bytes((folder / "a.vae").read_bytes()).width == 128


def test_a_second_signal_ends_a_stuck_clean_up_at_once(folder):
    result = subprocess.run([sys.executable, "-c", SIGNAL_AT, "twice", "compress",
                             str(folder / "a.png")], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGTERM  # as without a handler, not the clean exit
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg"]


def test_jobs_give_the_same_files_and_report_as_one_process(folder):
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "c.png").write_bytes((folder / "a.png").read_bytes())
    outputs = {}
    for jobs in (1, 2):
        result = run("compress", folder, "-o", folder / str(jobs), "--jobs", jobs)
        assert_one_line_error(result, "broken.png", "not a readable image")
        assert "3 of 4 files done, 1 failed" in result.stderr
        outputs[jobs] = {p.name: p.read_bytes() for p in (folder / str(jobs)).iterdir()}
    assert sorted(outputs[1]) == ["a.vae", "b.vae", "c.vae"] and outputs[1] == outputs[2]
    result = run("decompress", folder / "2", "-o", folder / "png", "--jobs", 2)
    assert result.exit_code == 0 and Image.open(folder / "png" / "b.png").mode == "L"
    sizes = {}
    for quality in (40, 95):  # --format and -q reach the workers
        out = folder / f"jpg{quality}"
        result = run("decompress", folder / "2", "-o", out, "--jobs", 2, "--format", "jpg",
                     "-q", quality)
        assert result.exit_code == 0 and Image.open(out / "a.jpg").format == "JPEG"
        sizes[quality] = (out / "a.jpg").stat().st_size
    assert sizes[40] < 0.7 * sizes[95]


TORCH_START = """
import atexit, gc, sys
full = []
gc.callbacks.append(lambda phase, info: full.append(info["generation"] == 2) if phase == "stop"
                    else None)
if sys.argv[1] == "off":
    gc.disable()
atexit.register(lambda: print(gc.isenabled(), sum(full), gc.get_freeze_count()))
if sys.argv[2] == "command":
    from vaecodec.__main__ import main
    sys.argv[1:] = sys.argv[3:]
    main()
elif sys.argv[2] == "spawned worker":
    from vaecodec import workers
    workers._start(1)
else:
    from vaecodec import files
    files.codec()
"""


@pytest.mark.parametrize("collector, start", [("on", "codec"), ("off", "codec"),
                                              ("on", "spawned worker"), ("on", "command")])
def test_torch_is_imported_without_full_collections_and_frozen_out_of_later_ones(
        folder, collector, start):
    result = subprocess.run([sys.executable, "-c", TORCH_START, collector, start, "compress",
                             folder / "a.png", "-o", folder / "a.vae"], capture_output=True,
                            text=True, check=True)
    enabled, full_collections, frozen = result.stdout.split()
    assert enabled == str(collector == "on")  # the caller's setting, restored
    assert full_collections == "0"
    assert int(frozen) > 100_000  # torch's objects, out of later collections


def test_refusals_before_the_first_file_come_without_importing_torch(folder):
    """An existing output or a missing input is said at once, not after torch's second."""
    script = ("import atexit, sys; atexit.register(lambda: print('torch' in sys.modules)); "
              "from vaecodec.__main__ import main; main()")
    for name in ("a.vae", "b.vae"):
        (folder / name).write_bytes(b"keep me")
    for args in (["compress", folder / "missing.png"], ["decompress", folder / "missing.vae"],
                 ["compress", folder / "a.png", "-o", folder / "a.vae"],
                 ["compress", folder / "a.png", folder / "b.jpg", "--jobs", "2"]):
        result = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                                capture_output=True, text=True)
        assert result.returncode == 1 and "\nerror: " in "\n" + result.stderr
        assert result.stdout.split() == ["False"]


TORCH_SAYS = """
import sys, warnings


class Speaking:  # a warning as torch is first imported, as torch's own would come
    def find_spec(self, name, path, target=None):
        if name == "torch":
            warnings.warn("torch says this as it loads")


sys.meta_path.insert(0, Speaking())
from vaecodec.__main__ import main
main()
"""


@pytest.mark.parametrize("source", ["a.png", "-"])
def test_what_torch_says_as_it_loads_is_shown(folder, source):
    result = subprocess.run([sys.executable, "-c", TORCH_SAYS, "compress", source, "-o",
                             folder / "a.vae"], input=(folder / "a.png").read_bytes(),
                            capture_output=True, cwd=folder)
    assert result.returncode == 0 and b"torch says this as it loads" in result.stderr


def test_existing_outputs_are_refused_before_the_workers_start(folder):
    (folder / "out").mkdir()
    (folder / "out" / "a.vae").write_bytes(b"keep me")
    result = run("compress", folder, "-o", folder / "out", "--jobs", 2)
    assert_one_line_error(result, "a.png", "exists")
    assert (folder / "out" / "a.vae").read_bytes() == b"keep me"
    assert (folder / "out" / "b.vae").exists()


def test_device_option(folder):
    result = run("compress", folder / "a.png", "--device", "tpu")
    assert result.exit_code == 2 and "'tpu' is not one of" in result.output
    if not torch.cuda.is_available():
        result = run("compress", folder / "a.png", "--device", "cuda")
        assert result.exit_code == 2 and "no CUDA device available" in result.output
        assert not (folder / "a.vae").exists()
    result = run("compress", folder / "a.png", "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0


def test_gigantic_png_is_refused_before_decoding(folder):
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                                      + chunk(b"IEND", b""))
    result = run("compress", folder / "huge.png")
    assert_one_line_error(result, "huge.png", "100000×100000 exceeds the limit")


def test_empty_directory_is_an_error(tmp_path):
    assert_one_line_error(run("compress", tmp_path), "no input files found")


def test_output_folder_that_cannot_be_created(folder):
    result = run("compress", folder, "-o", folder / "a.png" / "sub")
    assert result.exit_code == 2 and "cannot create" in result.output
    assert "Traceback" not in result.output


def test_target_bpp_and_verbose(folder):
    result = run("compress", folder / "a.png", "--target-bpp", 0.5, "-v")
    assert result.exit_code == 0
    size = (folder / "a.vae").stat().st_size
    assert 8 * size / (128 * 96) == pytest.approx(0.5, rel=0.03)
    quality = Bitstream.from_bytes((folder / "a.vae").read_bytes()).quality
    assert f"a.png: {size} bytes, {8 * size / (128 * 96):.4f} bpp, quality {quality:g}" \
        in result.stderr


def test_unreachable_budget_notes_or_fails_under_strict(folder):
    Image.open(folder / "a.png").crop((0, 0, 16, 16)).save(folder / "tiny.png")
    result = run("compress", folder / "tiny.png", "--max-bytes", 50)
    assert result.exit_code == 0 and "note:" in result.stderr and "out of reach" in result.stderr
    assert Bitstream.from_bytes((folder / "tiny.vae").read_bytes()).quality == 1
    result = run("compress", folder / "tiny.png", "--max-bytes", 50, "--strict", "-f")
    assert_one_line_error(result, "a budget of 50 bytes is out of reach")


def test_quiet_shows_errors_only(folder):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "CMYK").save(folder / "c.tif")
    (folder / "bad.png").write_bytes(b"not an image")
    (folder / "within").mkdir()  # not searched without -r: a note, but not under --quiet
    result = run("compress", folder, "-o", folder / "out", "--quiet")
    assert_one_line_error(result, "bad.png")
    assert result.stderr.count("\n") == 1


def test_quality_and_target_together_is_a_usage_error(folder):
    result = run("compress", folder / "a.png", "-q", 50, "--target-psnr", 30)
    assert result.exit_code == 2 and "only one of -q/--quality and --target-psnr" in result.stderr
    result = run("compress", folder / "a.png", "-q", 50, "--strict")  # it would change nothing
    assert result.exit_code == 2 and "--strict applies to a target" in result.stderr
    assert not (folder / "a.vae").exists()


def test_metadata_survives_the_command_line(folder):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(folder / "a.png").save(folder / "m.webp", icc_profile=icc, xmp=b"<x:xmpmeta/>")
    assert run("compress", folder / "m.webp").exit_code == 0
    assert run("decompress", folder / "m.vae", "-o", folder / "back.jpg").exit_code == 0
    back = Image.open(folder / "back.jpg")
    assert back.info["icc_profile"] == icc and back.info["xmp"] == b"<x:xmpmeta/>"
    assert run("info", folder / "m.vae").stdout.endswith(
        f", ICC profile {len(icc)} bytes, XMP 12 bytes\n")
    assert run("compress", folder / "m.webp", "--strip", "-o", folder / "s.vae").exit_code == 0
    assert Bitstream.from_bytes((folder / "s.vae").read_bytes()).metadata_section() == b""


def files_in(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_recursive_batches_mirror_the_folders(tmp_path, photo):
    photos = tmp_path / "photos"
    for name in ("a.png", "2019/b.jpg", "2019/summer/c.png", ".thumbnails/d.png"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        photo.save(photos / name)
    result = run("compress", photos, "-o", tmp_path / "top")
    assert result.exit_code == 0 and files_in(tmp_path / "top") == ["a.vae"]
    assert f"note: {photos}: 1 folder within not searched (-r searches it)" in result.stderr
    assert run("compress", "-r", photos, "-o", tmp_path / "vae").exit_code == 0
    assert files_in(tmp_path / "vae") == ["2019/b.vae", "2019/summer/c.vae", "a.vae"]
    assert run("decompress", "-r", tmp_path / "vae", "-o", tmp_path / "webp", "--format",
               "WebP").exit_code == 0
    assert files_in(tmp_path / "webp") == ["2019/b.webp", "2019/summer/c.webp", "a.webp"]
    assert Image.open(tmp_path / "webp/2019/summer/c.webp").format == "WEBP"
    assert run("info", "-r", tmp_path / "vae").stdout.count(": 128×96 RGB") == 3
    assert run("compress", "-r", photos).exit_code == 0  # beside the inputs
    assert [name for name in files_in(photos) if name.endswith(".vae")] == [
        "2019/b.vae", "2019/summer/c.vae", "a.vae"]


def test_recursive_leaves_links_and_reports_unreadable_folders(tmp_path, photo, monkeypatch):
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    for name in ("photos/a.png", "photos/._a.png", "photos/sub/.hidden.png", "elsewhere/e.png",
                 "photos/locked/l.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        photo.save(tmp_path / name, format="PNG")
    (photos / "linked").symlink_to(elsewhere)  # out of the tree
    (photos / "sub" / "loop").symlink_to(photos)  # back up it
    walk = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return walk(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run("compress", "-r", photos, "-o", photos / "vae")
    assert result.exit_code == 1  # the unreadable folder, reported in one line
    assert f"error: {photos / 'locked'}: cannot read (Permission denied)" in result.stderr
    assert f"note: {photos}: 2 linked folders not followed" in result.stderr
    assert "1 of 1 files done, 1 folder unreadable" in result.stderr
    assert files_in(photos / "vae") == ["a.vae"]  # no hidden files, no links
    monkeypatch.setattr(os, "scandir", walk)
    again = run("compress", "-r", photos, "-o", photos / "vae", "--skip-existing")
    assert again.exit_code == 0 and "1 of 1 files done, 1 skipped" in again.stderr
    assert files_in(photos / "vae") == ["a.vae", "locked/l.vae"]
    # The output folder is not searched: without -r, sub and locked only are left unsearched.
    result = run("compress", photos, "-o", photos / "vae", "--skip-existing")
    assert f"note: {photos}: 2 folders within not searched (-r searches them)" in result.stderr


def test_skip_existing_resumes_a_batch(folder):
    assert run("compress", folder, "-o", folder / "vae").exit_code == 0
    (folder / "vae" / "b.vae").unlink()
    (folder / "vae" / "a.vae").write_bytes(b"left as it is")
    result = run("compress", folder, "-o", folder / "vae", "--skip-existing")
    assert result.exit_code == 0
    assert "1 of 1 files done, 1 skipped (their outputs exist)" in result.stderr
    assert (folder / "vae" / "a.vae").read_bytes() == b"left as it is"
    assert Bitstream.from_bytes((folder / "vae" / "b.vae").read_bytes()).mode == "L"
    result = run("decompress", folder / "vae" / "b.vae", "--skip-existing")
    assert result.exit_code == 0 and (folder / "vae" / "b.png").exists()
    result = run("compress", folder, "-o", folder / "vae", "--skip-existing", "-v")
    assert result.exit_code == 0 and "0 of 0 files done, 2 skipped" in result.stderr
    assert f"a.png: skipped, {folder / 'vae' / 'a.vae'} exists" in result.stderr
    result = run("compress", folder / "a.png", "-o", folder / "a.png", "--skip-existing")
    assert_one_line_error(result, "input and output are the same file")  # not skipped: it is
    result = run("compress", folder, "-o", folder / "vae", "--skip-existing", "--force")
    assert result.exit_code == 2 and "only one of --force and --skip-existing" in result.stderr
    (folder / "vae" / "a.vae").unlink()
    (folder / "vae" / "a.vae").mkdir()  # in the way, not done
    result = run("compress", folder, "-o", folder / "vae", "--skip-existing")
    assert_one_line_error(result, "output", "a.vae is a directory")


def test_format_names_what_decompress_writes(folder):
    run("compress", folder / "a.png")
    assert run("decompress", folder / "a.vae", "--format", ".jpg").exit_code == 0
    assert Image.open(folder / "a.jpg").format == "JPEG"
    result = run("decompress", folder / "a.vae", "-o", "-", "--format", "tif")
    assert result.exit_code == 0 and result.stdout_bytes[:4] == b"II*\0"
    result = run("decompress", folder / "a.vae", "-o", folder / "x.png", "--format", "jpg")
    assert result.exit_code == 2 and "x.png is not a .jpg file: give one of -o and --format" \
        in result.stderr
    for refused in ("doc", "pdf", "ico", "vae"):
        result = run("decompress", folder / "a.vae", "--format", refused)
        assert result.exit_code == 2
        assert f"cannot write images with extension '.{refused}' (write PNG, JPEG" in result.stderr
    result = run("decompress", folder / "a.vae", "-o", folder / "a.backup")
    assert result.exit_code == 2 and "extension '.backup'" in result.stderr  # before decoding
    assert not (folder / "x.png").exists()
    result = run("decompress", folder / "a.vae", "-o", folder / "x.jpeg", "--format", "jpg")
    assert result.exit_code == 0 and Image.open(folder / "x.jpeg").format == "JPEG"
    result = run("decompress", folder / "a.vae", "-o", folder / "x.gif")
    assert result.exit_code == 0 and "GIF holds 256 colours: reduced to a palette" in result.stderr
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "side.pdf")
    assert result.exit_code == 2 and "extension '.pdf'" in result.stderr  # before any work


def test_stdin_beside_a_folder(folder):
    (folder / "in").mkdir()
    run("compress", folder / "a.png", "-o", folder / "in" / "x.vae")
    data = (folder / "in" / "x.vae").read_bytes()
    result = run("decompress", "-", folder / "in", "-o", folder / "out", input=data)
    assert result.exit_code == 0 and files_in(folder / "out") == ["stdin.png", "x.png"]


def test_a_damaged_later_frame_does_not_stop_the_first(folder, monkeypatch):
    from PIL import GifImagePlugin

    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "lime", "blue")]
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:])

    def damaged(image):
        raise IndexError("index out of range")  # what Pillow raises for some cut GIFs

    with monkeypatch.context() as patch:
        patch.setattr(GifImagePlugin.GifImageFile, "n_frames", property(damaged))
        assert run("compress", folder / "moving.gif").exit_code == 0
    with Image.open(folder / "moving.gif") as image:
        image.load()
    import vaecodec

    assert vaecodec.compress(image)  # its file closed, the frame at hand loaded


def test_lossy_outputs_are_written_in_full_colour_at_the_quality_asked(folder):
    import io

    import vaecodec

    run("compress", folder / "a.png")
    decoded = vaecodec.decompress((folder / "a.vae").read_bytes())
    expected = io.BytesIO()
    decoded.save(expected, "JPEG", quality=90, subsampling=0)
    assert run("decompress", folder / "a.vae", "-o", folder / "a.jpg").exit_code == 0
    assert (folder / "a.jpg").read_bytes() == expected.getvalue()
    sizes = {}
    for quality in (30, 90):
        target = folder / f"q{quality}.webp"
        assert run("decompress", folder / "a.vae", "-o", target, "-q", quality).exit_code == 0
        sizes[quality] = target.stat().st_size
    assert sizes[30] < 0.6 * sizes[90]


def test_a_reader_that_stops_ends_the_command_quietly(folder):
    """`vaecodec info vae/ | head -1`: more lines than the pipe holds, and the reader goes."""
    run("compress", folder / "a.png", "-o", folder / "a.vae")
    many = folder / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"{i}.vae").write_bytes((folder / "a.vae").read_bytes())
    process = subprocess.Popen([sys.executable, "-m", "vaecodec", "info", str(many)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(str(many).encode())
    process.stdout.close()
    assert process.wait(timeout=60) == 1 and process.stderr.read() == b""
    # One write larger than the pipe holds: the part the reader never took is no success.
    big = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(big).save(folder / "big.png")
    run("compress", folder / "big.png", "-q", 100)
    process = subprocess.Popen([sys.executable, "-m", "vaecodec", "decompress",
                                str(folder / "big.vae"), "-o", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(10).startswith(b"\x89PNG")
    process.stdout.close()
    assert process.wait(timeout=60) == 1 and process.stderr.read() == b""


def test_a_closed_stdout_is_one_error_line(folder):
    run("compress", folder / "a.png")
    result = subprocess.run([sys.executable, "-m", "vaecodec", "info", str(folder / "a.vae")],
                            stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=60)
    assert result.returncode == 1
    assert result.stderr == f"error: {folder / 'a.vae'}: stdout is closed\n".encode()


def test_damaged_exif_beside_xmp_fails_the_tiff_in_one_line(folder):
    run("compress", folder / "a.png")
    stream = Bitstream.from_bytes((folder / "a.vae").read_bytes())
    damaged = Bitstream(**{**vars(stream), "exif": b"not a TIFF header", "xmp": b"<x/>"})
    (folder / "d.vae").write_bytes(damaged.to_bytes())
    assert run("decompress", folder / "d.vae", "-o", folder / "d.png").exit_code == 0
    result = run("decompress", folder / "d.vae", "-o", folder / "d.tif")
    assert_one_line_error(result, "d.vae: cannot write TIFF")
    assert "internal error" not in result.stderr and not (folder / "d.tif").exists()


def test_info_json_is_one_object_per_file(folder):
    import json

    run("compress", folder / "a.png", "-q", 33)
    run("compress", folder / "b.jpg", "-q", 50)
    result = run("info", "--json", folder / "a.vae", folder / "b.vae")
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {"file": str(folder / "a.vae"), "format_version": 4, "width": 128,
                     "height": 96, "mode": "RGB", "quality": 33.0,
                     "bytes": (folder / "a.vae").stat().st_size,
                     "bpp": round(8 * (folder / "a.vae").stat().st_size / (128 * 96), 6),
                     "model_id": first["model_id"], "icc_profile_bytes": 0, "exif_bytes": 0,
                     "xmp_bytes": 0}
    assert second["mode"] == "L" and second["quality"] == 50


def test_compare_writes_a_captioned_picture(folder):
    run("compress", folder / "a.png", "-q", 50)
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "side.png")
    assert result.exit_code == 0
    side = Image.open(folder / "side.png")
    assert side.width == 3 * 128 + 2 * 6 and side.height > 96
    assert_one_line_error(run("compare", folder / "a.png", folder / "a.vae", "-o",
                              folder / "side.png"), "exists")
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "crop.png",
                 "--crop", "10,10,64,32")
    assert result.exit_code == 0 and Image.open(folder / "crop.png").width == 3 * 64 + 2 * 6
    assert_one_line_error(run("compare", folder / "a.png", folder / "a.vae", "-o",
                              folder / "bad.png", "--crop", "100,0,64,32"), "does not fit")
    (folder / "small.png").write_bytes((folder / "a.png").read_bytes())
    Image.open(folder / "a.png").crop((0, 0, 64, 64)).save(folder / "small.png")
    assert_one_line_error(run("compare", folder / "small.png", folder / "a.vae", "-o",
                              folder / "odd.png"), "differ in size")


def test_sample_draws_reproducible_images(tmp_path):
    result = run("sample", "-n", 2, "-o", tmp_path, "--size", "64x48", "--seed", 3)
    assert result.exit_code == 0
    first = np.asarray(Image.open(tmp_path / "sample-1.png"))
    assert first.shape == (48, 64, 3)
    assert not np.array_equal(first, np.asarray(Image.open(tmp_path / "sample-2.png")))
    assert run("sample", "-n", 1, "-o", tmp_path / "again", "--size", "64x48", "--seed",
               3).exit_code == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again" / "sample-1.png")))
    assert_one_line_error(run("sample", "-n", 1, "-o", tmp_path, "--size", "64x48"), "exists")
    assert run("sample", "-o", tmp_path, "--size", "64").exit_code == 2


def test_no_color_is_honoured(folder, monkeypatch):
    result = CliRunner().invoke(main, ["compress", str(folder / "missing.png")], color=True)
    assert "\x1b[" in result.stderr
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(main, ["compress", str(folder / "missing.png")], color=True)
    assert "\x1b[" not in result.stderr and "error: " in result.stderr


def test_every_command_has_examples_and_says_what_it_does():
    for command in ([], *([name] for name in main.commands)):
        assert "Examples:" in run(*command, "--help").stdout, command
    assert "(default: 1,10,25,45,65,85,100)" in " ".join(run("bench", "--help").stdout.split())
    assert "-o" not in run("info", "--help").stdout  # info has none
    assert "counted after padding to multiples of 64" in " ".join(
        run("compress", "--help").stdout.split())


# Runs the command with files.compress replaced: the worker converting a file that starts with
# "die" is killed, as the kernel's OOM killer would; one that starts with "slow" says "slow" and
# takes ten minutes. It is replaced as this file is imported, so in spawned workers too, which import it
# again (as __mp_main__).
DIES = """
import os, signal, sys, time

from vaecodec import files, workers

compress = files.compress
if "CORES" in os.environ:  # more cores than jobs: the workers are spawned, not forked
    workers.cores = lambda: int(os.environ["CORES"])


def compress_or_die(data, *args, **kwargs):
    if data.startswith(b"die"):
        os.kill(os.getpid(), signal.SIGKILL)
    if data.startswith(b"slow"):
        print("slow", file=sys.stderr, flush=True)
        time.sleep(600)
    return compress(data, *args, **kwargs)


files.compress = compress_or_die
if __name__ == "__main__":
    sys.argv = ["vaecodec", *sys.argv[1:]]
    from vaecodec.__main__ import main
    main()
"""


@pytest.mark.parametrize("cores", [None, "4"], ids=["forked", "spawned"])
def test_a_worker_that_dies_fails_its_files_and_the_batch_goes_on(folder, tmp_path_factory,
                                                                  cores):
    script = tmp_path_factory.mktemp("script") / "dies.py"
    script.write_text(DIES)
    (folder / "0-dies.png").write_bytes(b"die")
    (folder / "c.png").write_bytes((folder / "a.png").read_bytes())
    process = subprocess.Popen([sys.executable, str(script), "compress", str(folder), "-o",
                                str(folder / "out"), "--jobs", "2"], stderr=subprocess.PIPE,
                               start_new_session=True,
                               env={**os.environ, **({"CORES": cores} if cores else {})})
    try:
        _, stderr = process.communicate(timeout=120)  # it hung, waiting for the dead worker
    finally:
        with contextlib.suppress(ProcessLookupError):  # what a hang leaves, workers included
            os.killpg(process.pid, signal.SIGKILL)
    lines = stderr.decode().splitlines()
    assert process.returncode == 1 and "Traceback" not in stderr.decode()
    assert f"error: {folder / '0-dies.png'}: worker process died (out of memory?)" in lines
    assert re.fullmatch(r"\d of 4 files done, \d failed", lines[-1])
    written = sorted(p.name for p in (folder / "out").iterdir())
    assert {"b.vae", "c.vae"} <= set(written) <= {"a.vae", "b.vae", "c.vae"}  # no .tmp
    assert Bitstream.from_bytes((folder / "out" / "c.vae").read_bytes()).width == 128


def test_a_signal_stops_busy_workers_at_once(folder, tmp_path_factory):
    """The command ends at once, its workers with it, not once their files are done."""
    script = tmp_path_factory.mktemp("script") / "dies.py"
    script.write_text(DIES)
    for name in ("a", "b"):
        (folder / f"{name}-slow.png").write_bytes(b"slow")
    process = subprocess.Popen([sys.executable, str(script), "compress", str(folder), "-o",
                                str(folder / "out"), "--jobs", "2"], stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert process.stderr.readline() == b"compressing 4 files\n"
        assert [process.stderr.readline() for _ in range(2)] == [b"slow\n"] * 2  # both busy
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)  # not the workers' ten minutes
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1 and stderr.strip() == b"Aborted!"


def read_fifo(fifo, command):
    """`command()`'s result, and what it wrote into the FIFO `fifo`, which a thread reads."""
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = command()
    with contextlib.suppress(OSError):  # if nothing opened it, an end of file for the reader
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=10)
    return result, b"".join(received)


def test_a_fifo_as_output_is_written_into_not_replaced(folder):
    fifo = folder / "pipe"
    os.mkfifo(fifo)
    for force in ((), ("--force",)):  # not an existing output: --force changes nothing
        result, data = read_fifo(fifo, lambda: run("compress", folder / "a.png", "-o", fifo,
                                                   *force))
        assert result.exit_code == 0 and stat.S_ISFIFO(fifo.stat().st_mode)
        assert Bitstream.from_bytes(data).width == 128
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg", "pipe"]


def test_a_link_to_stdout_is_written_through_and_kept(folder):
    """/dev/stdout is a link to /proc/self/fd/1: with stdout sent to a file, that file gets the
    bytes, with or without --force, and the link stays (a rename would have replaced it)."""
    link = folder / "stdout"
    link.symlink_to("/proc/self/fd/1")
    for force in ((), ("--force",)):
        (folder / "sent.vae").write_bytes(bytes(100_000))  # truncated by the command, not here
        with open(folder / "sent.vae", "r+b") as sent:
            done = subprocess.run([sys.executable, "-m", "vaecodec", "compress", folder / "a.png",
                                   "-o", link, *force], stdout=sent, stderr=subprocess.PIPE)
        assert done.returncode == 0, done.stderr
        assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
        assert Bitstream.from_bytes((folder / "sent.vae").read_bytes()).width == 128


def test_compare_keeps_the_original_and_names_it_in_its_errors(folder):
    run("compress", folder / "a.png")
    original = (folder / "a.png").read_bytes()
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "a.png", "--force")
    assert_one_line_error(result, f"{folder / 'a.png'}: input and output are the same file")
    assert (folder / "a.png").read_bytes() == original
    result = run("compare", folder / "missing.png", folder / "a.vae", "-o", folder / "c.png")
    assert_one_line_error(result, f"error: {folder / 'missing.png'}: no such file")
    assert "a.vae" not in result.stderr
    # --crop's form is checked before anything is read
    result = run("compare", folder / "missing.png", folder / "a.vae", "-o", folder / "c.png",
                 "--crop", "10,10")
    assert result.exit_code == 2 and "expected X,Y,W,H in pixels" in result.stderr
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", f"{folder / 'new'}{os.sep}")
    assert result.exit_code == 2 and "not a folder" in result.stderr
    assert not (folder / "new").exists()


def test_compare_is_bounded_by_max_pixels_alone(folder, monkeypatch):
    """As compress: Pillow's own limit gives way to --max-pixels, whose message says the size."""
    with Image.open(folder / "a.png") as image:  # not by the command, which lifts the limit
        (folder / "a.vae").write_bytes(vaecodec.compress(image))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2000 pixels
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "c.png")
    assert result.exit_code == 0, result.output
    result = run("compare", folder / "a.png", folder / "a.vae", "-o", folder / "d.png",
                 "--max-pixels", 2000)
    assert_one_line_error(result, "image of 128×96 exceeds the limit of 2000 pixels")


def test_an_output_ending_with_a_slash_is_a_folder(folder):
    result = run("compress", folder / "a.png", "-o", f"{folder / 'new'}{os.sep}")
    assert result.exit_code == 0 and files_in(folder / "new") == ["a.vae"]


def test_a_file_named_dash_is_not_stdin(folder, monkeypatch):
    monkeypatch.chdir(folder)
    result = run("compress", "a.png", "-o", "./-")
    assert result.exit_code == 0 and result.stdout_bytes == b""
    assert Bitstream.from_bytes((folder / "-").read_bytes()).width == 128
    result = run("decompress", "./-", "-o", "back.png", input=b"")
    assert result.exit_code == 0 and Image.open(folder / "back.png").size == (128, 96)
    result = run("compress", "-", "-", input=(folder / "a.png").read_bytes())
    assert result.exit_code == 2 and "- (stdin) can be given only once" in result.stderr


def test_messages_under_the_progress_bar_start_their_own_line(folder):
    import pty

    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "CMYK").save(folder / "c.tif")
    (folder / "d.png").write_bytes(b"not an image")
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "vaecodec", "compress", str(folder), "-o",
                                str(folder / "out")], stderr=terminal,
                               env={**os.environ, "NO_COLOR": "1"})
    os.close(terminal)
    screen = b""
    while select.select([controller], [], [], 60)[0]:
        try:
            screen += os.read(controller, 4096)
        except OSError:  # the command has exited: the terminal is closed
            break
    os.close(controller)
    assert process.wait(timeout=60) == 1
    # What each line shows: the text after its last carriage return, less escape sequences.
    shown = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line.rsplit("\r", 1)[-1])
             for line in screen.decode().replace("\r\n", "\n").split("\n")]
    assert f"note: {folder / 'c.tif'}: converted CMYK image to RGB" in shown
    assert any(line.startswith(f"error: {folder / 'd.png'}: ") for line in shown), shown
    assert "3 of 4 files done, 1 failed" in shown


@pytest.mark.parametrize("command", [
    ("compress", "-q", "nan"), ("compress", "--target-bpp", "nan"),
    ("compress", "--target-bpp", "inf"), ("compress", "--target-psnr", "nan"),
    ("compress", "--target-psnr", "inf"), ("compress", "--max-bytes", str(10 ** 400)),
    ("sample", "-q", "nan"), ("bench", "--codecs", "vaecodec", "--qualities", "10,nan"),
])
def test_numbers_that_would_fail_every_file_are_usage_errors(folder, command):
    name, *options = command
    result = run(name, folder, "-o", folder / "out", *options) if name != "sample" else \
        run(name, "-o", folder / "out", "--size", "64x48", *options)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (folder / "out").exists()


def test_a_batch_outside_a_terminal_says_what_it_does(folder):
    result = run("compress", folder, "-o", folder / "vae")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["compressing 2 files", "2 of 2 files done"]
    result = run("decompress", folder / "vae", "-o", folder / "png")
    assert result.stderr.splitlines() == ["decompressing 2 files", "2 of 2 files done"]


def test_several_files_cannot_go_to_stdout(folder):
    result = run("compress", folder / "a.png", folder / "b.jpg", "-o", "-")
    assert result.exit_code == 2 and "cannot write several files to stdout" in result.stderr
    assert result.stdout == ""


def test_an_internal_error_is_one_line_and_the_batch_goes_on(folder, monkeypatch):
    """A bug in one file's conversion (its message over two lines) fails that file alone."""
    compress = files.compress

    def buggy(data, *args, **kwargs):
        if data.startswith(b"\x89PNG"):
            raise RuntimeError("first line\nsecond line")
        return compress(data, *args, **kwargs)

    monkeypatch.setattr(files, "compress", buggy)
    result = run("compress", folder, "-o", folder / "out")
    assert_one_line_error(result, "a.png", "internal error (RuntimeError: first line)")
    assert "second line" not in result.stderr and "1 of 2 files done, 1 failed" in result.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["b.vae"]


@pytest.mark.parametrize("failing,error,message", [
    ("os.replace", OSError(28, "No space left on device"), "cannot write"),
    ("pathlib.Path.read_bytes", PermissionError(13, "Permission denied"), "cannot read"),
])
def test_what_the_system_refuses_is_named(folder, monkeypatch, failing, error, message):
    """Not an internal error: the system's reason, and no temporary file left (tests run as
    root here, so the errors are made up)."""
    vaecodec.weights.load()  # read before reads fail

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(failing, refuse)
    result = run("compress", folder / "a.png")
    assert_one_line_error(result, "a.png", f"{message}", f"({error.strerror})")
    assert "internal error" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg"]


def test_each_files_notes_come_back_from_its_worker(folder):
    Image.open(folder / "a.png").convert("CMYK").save(folder / "c.tif")
    result = run("compress", folder, "-o", folder / "out", "--jobs", 2)
    assert result.exit_code == 0, result.stderr
    assert "c.tif: converted CMYK image to RGB" in result.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a.vae", "b.vae", "c.vae"]


def test_stdin_among_the_inputs_keeps_a_batch_in_the_command(folder):
    """Workers cannot read the command's stdin: with --jobs, such a batch runs as without."""
    result = run("compress", "-", folder / "b.jpg", "-o", folder / "out", "--jobs", 2,
                 input=(folder / "a.png").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["b.vae", "stdin.vae"]


def test_only_the_files_in_a_folder_are_read(folder):
    """A FIFO named like an image (reading it would wait for a writer) and a link to nothing
    are not files: left out, as are folders."""
    os.mkfifo(folder / "pipe.png")
    (folder / "gone.png").symlink_to(folder / "nothing.png")
    done = subprocess.run([sys.executable, "-m", "vaecodec", "compress", folder, "-o",
                           folder / "out"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "2 of 2 files done" in done.stderr, done.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a.vae", "b.vae"]


def test_a_closed_stdin_is_named(folder):
    done = subprocess.run([sys.executable, "-m", "vaecodec", "compress", "-", "-o",
                           folder / "x.vae"], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.close(0))
    assert (done.returncode, done.stderr) == (1, "error: <stdin>: stdin is closed\n")
    assert not (folder / "x.vae").exists()
