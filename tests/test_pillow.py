"""The Pillow plugin and metadata: `.vae` files through Image.open / Image.save, and ICC profiles
and EXIF carried byte for byte from PNG and JPEG to `.vae` and back."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

import vaecodec
from vaecodec.bitstream import Bitstream
from vaecodec.pillow_plugin import MIME_TYPE

from conftest import psnr

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_block():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Maker", "Model", "2026:11:26 12:00:00"
    return exif.tobytes()  # Pillow's form: b"Exif\0\0" + the TIFF structure


def reopened(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return Image.open(io.BytesIO(out.getvalue()))


def test_format_is_registered_like_pillows_own():
    assert Image.registered_extensions()[".vae"] == "VAE"
    assert Image.MIME["VAE"] == MIME_TYPE
    assert "VAE" in Image.OPEN and "VAE" in Image.SAVE


def test_save_and_open_round_trip(photo, tmp_path):
    photo.save(tmp_path / "x.vae", quality=60)
    assert Bitstream.from_bytes((tmp_path / "x.vae").read_bytes()).quality == 60
    with Image.open(tmp_path / "x.vae") as image:
        assert (image.format, image.size, image.mode) == ("VAE", photo.size, "RGB")
        assert image.get_format_mimetype() == MIME_TYPE
        assert psnr(photo, image) > 28


def test_save_takes_rate_targets(photo):
    out = io.BytesIO()
    photo.crop((64, 32, 128, 96)).save(out, "VAE", max_bytes=300, strict=True)
    assert 285 <= len(out.getvalue()) <= 300


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_modes_round_trip_through_pillow(photo, mode):
    image = photo.convert(mode)
    back = reopened(image, "VAE")
    assert back.mode == mode
    back.load()
    assert back.mode == mode and back.size == photo.size


def test_open_reads_only_the_header(tmp_path, photo):
    """Size, mode and metadata come from the container, without importing torch (which the pixels
    need: test_save_and_open_round_trip decodes them)."""
    photo.save(tmp_path / "x.vae", icc_profile=ICC)
    script = ("import sys, vaecodec; from PIL import Image; im = Image.open(sys.argv[1]); "
              "print(im.size, im.mode, len(im.info['icc_profile']), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.vae")],
                         capture_output=True, text=True, check=True).stdout
    assert out == f"(128, 96) RGB {len(ICC)} False\n"


def test_pixels_are_decoded_even_when_the_file_is_larger_than_them(tmp_path):
    """A 1×1 L image with an ICC profile: Pillow must not memory-map the file as raw pixels."""
    Image.new("L", (1, 1), 200).save(tmp_path / "dot.vae", icc_profile=ICC)
    with Image.open(tmp_path / "dot.vae") as image:
        assert image.getpixel((0, 0)) == vaecodec.decompress(
            (tmp_path / "dot.vae").read_bytes()).getpixel((0, 0))


def test_damaged_file_fails_on_open(photo):
    data = bytearray(vaecodec.compress(photo))
    data[-1] ^= 1
    with pytest.raises(vaecodec.CodecError, match="CRC-32"):
        Image.open(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_metadata_travels_byte_for_byte(photo, fmt):
    """PNG's iCCP and eXIf, JPEG's APP2 and APP1: into .vae, and out again."""
    source = reopened(photo, fmt, icc_profile=ICC, exif=exif_block())
    data = vaecodec.compress(source)
    stream = Bitstream.from_bytes(data)
    assert stream.icc_profile == ICC and b"Exif\0\0" + stream.exif == exif_block()
    decoded = vaecodec.decompress(data)
    assert decoded.info["icc_profile"] == ICC and decoded.info["exif"] == exif_block()
    again = reopened(decoded, fmt, icc_profile=decoded.info["icc_profile"],
                     exif=decoded.info["exif"])
    assert again.info["icc_profile"] == ICC and again.info["exif"] == exif_block()
    via_pillow = reopened(source, "VAE")
    assert via_pillow.info["icc_profile"] == ICC and via_pillow.info["exif"] == exif_block()


def test_strip_drops_metadata(photo):
    source = reopened(photo, "PNG", icc_profile=ICC, exif=exif_block())
    stripped = vaecodec.compress(source, strip=True)
    assert len(vaecodec.compress(source)) - len(stripped) == 2 * 8 + len(ICC) + len(
        exif_block()) - 6
    assert "icc_profile" not in vaecodec.decompress(stripped).info
    assert vaecodec.compress(photo) == stripped


def test_orientation_is_applied_and_dropped_from_exif(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    source = reopened(photo, "PNG", exif=exif.tobytes())
    decoded = vaecodec.decompress(vaecodec.compress(source))
    assert decoded.size == (photo.height, photo.width)
    assert decoded.getexif().get(0x0112) is None


def test_arrays_carry_no_metadata():
    data = vaecodec.compress(np.full((8, 8, 3), 128, np.uint8))
    assert Bitstream.from_bytes(data).icc_profile == Bitstream.from_bytes(data).exif == b""
