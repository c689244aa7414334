"""The Pillow plugin and metadata: `.vae` files through Image.open / Image.save, and ICC profiles,
EXIF and XMP carried byte for byte from the formats that hold them to `.vae` and back."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

import vaecodec
from vaecodec.bitstream import Bitstream
from vaecodec.errors import ConversionWarning
from vaecodec.images import JPEG_MAX_XMP, encode_image
from vaecodec.pillow_plugin import MIME_TYPE

from conftest import psnr

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_block():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Maker", "Model", "2026:11:26 12:00:00"
    return exif.tobytes()  # Pillow's form: b"Exif\0\0" + the TIFF structure


XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4" xmp:Label="Réseau"/></rdf:RDF>'
       '</x:xmpmeta><?xpacket end="w"?>').encode()
XMP_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "AVIF": ".avif", "TIFF": ".tif"}


def with_xmp(image, fmt, xmp=XMP, **options):
    """`image` written by Pillow as `fmt` with the XMP packet `xmp`, where that format keeps one:
    PNG in an iTXt chunk, TIFF in tag 700, the others through Pillow's `xmp` option."""
    if fmt == "PNG":
        options["pnginfo"] = PngImagePlugin.PngInfo()
        options["pnginfo"].add_itxt("XML:com.adobe.xmp", xmp.decode())
    elif fmt == "TIFF":
        options["tiffinfo"] = {700: xmp}
    else:
        options["xmp"] = xmp
    return reopened(image, fmt, **options)


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


def test_pillows_size_limit_governs_open(photo, monkeypatch):
    """As for Pillow's own formats: beyond vaecodec's default limit (67 MP) a file opens, and
    Image.MAX_IMAGE_PIXELS alone refuses it, from the header, before anything is decoded."""
    small = Bitstream.from_bytes(vaecodec.compress(photo.crop((0, 0, 16, 16))))
    huge = Bitstream(**{**vars(small), "width": 12000, "height": 9000}).to_bytes()  # 108 MP
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10 ** 9)
    assert Image.open(io.BytesIO(huge)).size == (12000, 9000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10 ** 6)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(huge))
    # The codec works on whole cells of 64 pixels: a thin image counts its padded area, here
    # 64 × 1 000 000 pixels against the limit of 2 000 000, where width × height is 1 000 000.
    thin = Bitstream(**{**vars(small), "width": 1, "height": 10 ** 6}).to_bytes()
    with pytest.raises(Image.DecompressionBombError, match="once padded"):
        Image.open(io.BytesIO(thin))


def test_pixels_are_decoded_even_when_the_file_is_larger_than_them(tmp_path):
    """A 1×1 L image with an XMP packet: Pillow must not memory-map the file as raw pixels."""
    Image.new("L", (1, 1), 200).save(tmp_path / "dot.vae", xmp=XMP)
    with Image.open(tmp_path / "dot.vae") as image:
        assert image.getpixel((0, 0)) == vaecodec.decompress(
            (tmp_path / "dot.vae").read_bytes()).getpixel((0, 0))


def test_load_closes_the_file_pillow_opened(tmp_path, photo):
    """As Pillow's own loaders do: a program that keeps many loaded images keeps no files open."""
    photo.save(tmp_path / "x.vae", quality=20)
    image = Image.open(tmp_path / "x.vae")
    opened = image.fp
    image.load()
    assert image.fp is None and opened.closed
    with open(tmp_path / "x.vae", "rb") as given:  # the caller's file: the caller closes it
        Image.open(given).load()
        assert not given.closed


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


@pytest.mark.parametrize("fmt", XMP_FORMATS)
def test_xmp_travels_byte_for_byte(photo, fmt):
    """From each format that holds XMP into .vae, and from .vae into each (encode_image: what
    `decompress -o` writes)."""
    source = with_xmp(photo, fmt)
    data = vaecodec.compress(source, quality=20)
    assert Bitstream.from_bytes(data).xmp == XMP
    decoded = vaecodec.decompress(data)
    assert decoded.info["xmp"] == XMP
    for extension in XMP_FORMATS.values():
        assert Image.open(io.BytesIO(encode_image(decoded, extension))).info["xmp"] == XMP
    assert reopened(source, "VAE").info["xmp"] == XMP  # Pillow's open reads it from the header
    assert Bitstream.from_bytes(vaecodec.compress(source, strip=True)).xmp == b""


def test_tiff_output_keeps_exif_tags_beside_the_xmp():
    """TIFF holds EXIF as tags of its own IFD, where the XMP tag goes too."""
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif.get_ifd(0x8769)[0x9003] = "2026:11:27 12:00:00"  # DateTimeOriginal, in the Exif IFD
    image = Image.new("RGB", (8, 8))
    image.info.update(icc_profile=ICC, exif=exif.tobytes(), xmp=XMP)
    written = Image.open(io.BytesIO(encode_image(image, ".tif")))
    assert written.info["icc_profile"] == ICC and written.info["xmp"] == XMP
    tags = written.getexif()
    assert tags[0x010F] == "Maker" and tags.get_ifd(0x8769)[0x9003] == "2026:11:27 12:00:00"


def test_jpeg_and_avif_outputs_keep_colour_at_full_resolution():
    """Red and blue columns one pixel wide: subsampled colour (4:2:0) would make them purple."""
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2, 0] = stripes[:, 1::2, 2] = 255
    for extension in (".jpg", ".avif"):
        written = Image.open(io.BytesIO(encode_image(Image.fromarray(stripes), extension)))
        assert np.abs(np.asarray(written.convert("RGB"), int) - stripes).mean() < 5  # 4:2:0: 89


def test_save_takes_exif_as_pillows_savers_do():
    """An Image.Exif, as JPEG, PNG and WebP take it, or its bytes."""
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    for given in (exif, exif.tobytes()):
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, "VAE", exif=given)
        assert b"Exif\0\0" + Bitstream.from_bytes(out.getvalue()).exif == exif.tobytes()


def test_xmp_as_text_is_refused():
    image = Image.new("RGB", (8, 8))
    with pytest.raises(vaecodec.CodecError, match="XMP must be bytes"):
        image.save(io.BytesIO(), "VAE", xmp=XMP.decode())


def test_xmp_given_to_save_replaces_the_images_own():
    image = Image.new("RGB", (8, 8))
    image.info["xmp"] = XMP
    out = io.BytesIO()
    image.save(out, "VAE", xmp=b"<given/>")
    assert Bitstream.from_bytes(out.getvalue()).xmp == b"<given/>"


def test_xmp_a_format_cannot_hold_is_dropped_with_a_note():
    image = Image.new("RGB", (8, 8))
    image.info["xmp"] = b"\xff" + XMP
    with pytest.warns(ConversionWarning, match="XMP dropped: PNG holds it only as UTF-8 text"):
        assert "xmp" not in Image.open(io.BytesIO(encode_image(image, ".png"))).info
    image.info["xmp"] = bytes(JPEG_MAX_XMP)  # the most a JPEG's XMP segment holds
    assert Image.open(io.BytesIO(encode_image(image, ".jpg"))).info["xmp"] == image.info["xmp"]
    image.info["xmp"] += b" "
    with pytest.warns(ConversionWarning, match="XMP dropped: 65505 bytes, where a JPEG holds 65504"):
        assert "xmp" not in Image.open(io.BytesIO(encode_image(image, ".jpg"))).info


def test_strip_drops_metadata(photo):
    source = with_xmp(photo, "PNG", icc_profile=ICC, exif=exif_block())
    stripped = vaecodec.compress(source, strip=True)
    assert len(vaecodec.compress(source)) - len(stripped) == 3 * 8 + len(ICC) + len(
        exif_block()) - 6 + len(XMP)
    assert not {"icc_profile", "exif", "xmp"} & set(vaecodec.decompress(stripped).info)
    assert vaecodec.compress(photo) == stripped


def test_orientation_is_applied_and_dropped_from_exif_and_xmp(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    turned = XMP.replace(b'xmp:Rating', b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                                        b'tiff:Orientation="6" xmp:Rating')
    source = with_xmp(photo, "PNG", turned, exif=exif.tobytes())
    decoded = vaecodec.decompress(vaecodec.compress(source))
    assert decoded.size == (photo.height, photo.width)
    assert decoded.getexif().get(0x0112) is None
    assert decoded.info["xmp"] == turned.replace(b'tiff:Orientation="6"', b"")


def test_arrays_carry_no_metadata():
    data = vaecodec.compress(np.full((8, 8, 3), 128, np.uint8))
    assert Bitstream.from_bytes(data).metadata_section() == b""
