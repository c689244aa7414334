"""Images in and out (images.py): reading files, converting modes and ICC profiles to what the
codec stores, and writing decoded images in each output format."""

import io
import itertools
import struct
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageCms

import vaecodec
from vaecodec import images
from vaecodec.errors import ConversionWarning
from vaecodec.bitstream import MODES, Bitstream
from vaecodec.images import WRITTEN, encode_image, read_image, split_channels

D50 = b"".join(struct.pack(">i", round(v * 65536)) for v in (0.9642, 1.0, 0.8249))
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "AVIF": ".avif", "TIFF": ".tif",
              "BMP": ".bmp", "PPM": ".ppm", "JPEG2000": ".jp2", "TGA": ".tga", "QOI": ".qoi",
              "GIF": ".gif"}


def icc_profile(device_class, space, connection, tags):
    """A minimal ICC version 2 profile, which littlecms reads: the header, the tag table, the tags
    and a D50 white point."""
    tags = {**tags, b"wtpt": b"XYZ " + bytes(4) + D50}
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags.items():
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + b"\x02\x10\x00\x00"
              + device_class + space + connection + bytes(12) + b"acsp" + bytes(28) + D50
              + bytes(48))
    return header + table + body


def grey_profile():
    """A display's grey profile (gamma 1)."""
    return icc_profile(b"mntr", b"GRAY", b"XYZ ", {b"kTRC": b"curv" + bytes(4) + b"\0\0\0\1\1\0"})


def cmyk_profile():
    """A printer's CMYK profile whose inks all print grey: each of C, M and Y takes a sixth of the
    lightness (L*), K all of it; a* = b* = 0."""
    corners = itertools.product((0, 1), repeat=4)
    grid = bytes(v for c, m, y, k in corners
                 for v in (round(255 * (1 - (c + m + y) / 6) * (1 - k)), 128, 128))
    ramp, identity = bytes(range(256)), struct.pack(">9i", *(65536 * (i % 4 == 0)
                                                              for i in range(9)))
    lut = b"mft1" + bytes(4) + bytes((4, 3, 2, 0)) + identity + ramp * 4 + grid + ramp * 3
    return icc_profile(b"prtr", b"CMYK", b"Lab ", {b"A2B0": lut})


def saved(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def stored(image):
    """What the codec stores of `image`: (mode, ICC profile, alpha, RGB), and the notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        rgb, alpha, mode, metadata = split_channels(image)
    return (mode, metadata["icc_profile"], alpha, rgb), [str(note.message) for note in caught]


def test_reads_in_threads_leave_pillows_limit_alone(monkeypatch):
    """Pillow's decompression-bomb limit is the process's: each of four reads at once sees it, and
    it is as it was once they are done."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit := 12345678)  # not None: it must stay
    png, seen = saved(Image.new("RGB", (8, 8)), "PNG"), []
    all_inside, check_size = threading.Barrier(4, timeout=10), images.check_size

    def checked_together(*arguments):  # each read waits here until all four have opened a file
        all_inside.wait()
        seen.append(Image.MAX_IMAGE_PIXELS)
        check_size(*arguments)

    monkeypatch.setattr(images, "check_size", checked_together)
    with ThreadPoolExecutor(4) as pool:
        assert [image.size for image in pool.map(read_image, [png] * 4)] == [(8, 8)] * 4
    assert seen == [limit] * 4 and Image.MAX_IMAGE_PIXELS == limit


def test_pillows_own_limit_still_applies(monkeypatch):
    """A file Pillow refuses as a decompression bomb is refused, with our limit's message where that
    is the lower one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    png = saved(Image.new("RGB", (64, 48)), "PNG")  # 3072 pixels: over twice Pillow's limit
    with pytest.raises(vaecodec.CodecError,
                       match=r"exceeds Pillow's limit of 2000 pixels \(PIL.Image.MAX_IMAGE_PIXELS"):
        read_image(png)
    with pytest.raises(vaecodec.CodecError, match="exceeds the limit of 1500 pixels$"):
        read_image(png, max_pixels=1500)


def test_a_truncated_file_is_a_codec_error():
    png = saved(Image.effect_noise((64, 64), 50), "PNG")
    truncated = Image.open(io.BytesIO(png[:-200]))  # opened lazily: the pixels are read later
    with pytest.raises(vaecodec.CodecError, match=r"not a readable image \(image file is trunc"):
        vaecodec.compress(truncated)


@pytest.mark.parametrize("mode,expected,name", [("1", "L", "1-bit"), ("I;16", "L", "I;16"),
                                                ("P", "RGB", "P"), ("CMYK", "RGB", "CMYK")])
def test_grey_modes_become_l_and_colour_ones_rgb(mode, expected, name):
    image = Image.linear_gradient("L").resize((64, 48)).convert(mode)
    (stored_mode, _, alpha, _), notes = stored(image)
    assert (stored_mode, alpha) == (expected, None)
    assert notes == [f"converted {name} image to {expected}"]


def test_sixteen_bit_grey_is_divided_by_257():
    levels = Image.fromarray(np.array([[0, 257, 25700, 51400, 65535]], np.uint16))
    (_, _, _, rgb), _ = stored(levels)
    assert rgb[0, :, 0].tolist() == [0, 1, 100, 200, 255]


def test_sixteen_bit_transparency_becomes_alpha():
    """A 16-bit grey PNG whose tRNS chunk makes one value transparent."""
    wide = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21
    png = saved(Image.fromarray(wide), "PNG", transparency=int(wide[5, 7]))
    (mode, _, alpha, _), notes = stored(Image.open(io.BytesIO(png)))
    assert (mode, notes) == ("LA", ["converted I;16 image to LA"])
    assert np.array_equal(alpha == 0, wide == wide[5, 7]) and alpha.max() == 255


def test_cmyk_goes_to_srgb_through_its_profile():
    """Cyan ink, which this printer prints grey: the colour a colour-managed viewer shows, not
    Pillow's cyan, and no profile left (sRGB)."""
    jpeg = saved(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95,
                 icc_profile=cmyk_profile())
    (mode, profile, _, rgb), notes = stored(Image.open(io.BytesIO(jpeg)))
    assert (mode, profile) == ("RGB", b"")
    assert notes == ["converted CMYK image to RGB (sRGB, through its ICC profile)"]
    red, green, blue = rgb[8, 8].astype(int)
    assert abs(red - green) <= 3 and abs(red - blue) <= 3 and 190 < red < 225


def test_cmyk_without_a_usable_profile_is_converted_as_before():
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    (mode, profile, _, rgb), notes = stored(cyan)
    assert (mode, profile, tuple(rgb[0, 0]), notes) == (
        "RGB", b"", (0, 255, 255), ["converted CMYK image to RGB"])
    cyan.info["icc_profile"] = cmyk_profile()[:100]  # a CMYK header littlecms cannot read
    (mode, profile, _, rgb), notes = stored(cyan)
    assert (mode, profile, tuple(rgb[0, 0]), notes) == (
        "RGB", b"", (0, 255, 255), ["converted CMYK image to RGB", "ICC profile dropped: its "
                                    "colour space (CMYK) does not fit an RGB image"])


def test_a_grey_profile_stays_with_grey_pixels():
    wide = Image.fromarray(np.full((8, 8), 40000, np.uint16))
    png = saved(wide, "PNG", icc_profile=grey_profile())
    (mode, profile, _, _), _ = stored(Image.open(io.BytesIO(png)))
    assert (mode, profile) == ("L", grey_profile())
    grey_with_alpha = Image.new("LA", (8, 8))
    grey_with_alpha.info["icc_profile"] = grey_profile()
    (mode, profile, _, _), notes = stored(grey_with_alpha)
    assert (mode, profile, notes) == ("LA", grey_profile(), [])


def test_exif_without_jpegs_prefix_is_kept_whole():
    """Pillow gives some images' EXIF as the TIFF block alone (II*\\0 …), without the
    `Exif\\0\\0` of JPEG's segment: it is stored as it is."""
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    block = exif.tobytes()[6:]
    assert block[:4] in (b"II*\0", b"MM\0*")
    image = Image.new("RGB", (8, 8))
    image.info["exif"] = block
    assert Bitstream.from_bytes(vaecodec.compress(image)).exif == block


def test_an_opened_image_is_measured_before_its_pixels_are_read(monkeypatch):
    image = Image.open(io.BytesIO(saved(Image.new("RGB", (64, 64)), "PNG")))
    monkeypatch.setattr(images, "_loaded", lambda image: pytest.fail("pixels read"))
    with pytest.raises(vaecodec.CodecError, match="exceeds the limit"):
        vaecodec.compress(image, max_pixels=1000)


@pytest.mark.parametrize("mode,profile,space", [
    ("L", ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(), "RGB"),
    ("RGB", grey_profile(), "GRAY"),
    ("RGBA", b"not a profile", "unreadable"),
])
def test_a_profile_for_other_pixels_is_dropped_with_a_note(mode, profile, space):
    image = Image.new(mode, (8, 8))
    image.info["icc_profile"] = profile
    (stored_mode, stored_profile, _, _), notes = stored(image)
    assert (stored_mode, stored_profile) == (mode, b"")
    assert notes == [f"ICC profile dropped: its colour space ({space}) does not fit an {mode} "
                     "image"]


def test_every_written_format_is_tested():
    assert set(EXTENSIONS) == set(WRITTEN)


def test_grey_written_as_colour_leaves_its_grey_profile_out():
    """WebP and AVIF hold no grey: the image goes as RGB, where its grey profile would not fit."""
    image = Image.new("L", (8, 8), 100)
    image.info["icc_profile"] = grey_profile()
    for extension in (".webp", ".avif"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConversionWarning)
            written = Image.open(io.BytesIO(encode_image(image, extension)))
        assert written.mode == "RGB" and not written.info.get("icc_profile")
        assert any("ICC profile dropped" in str(note.message) for note in caught)
    png = Image.open(io.BytesIO(encode_image(image, ".png")))
    assert png.mode == "L" and png.info["icc_profile"] == grey_profile()


@pytest.mark.parametrize("fmt,mode", list(itertools.product(EXTENSIONS, MODES)))
def test_each_format_writes_each_stored_mode(fmt, mode):
    """Grey as colour where the format holds no grey (QOI …), alpha dropped with a note where it
    holds no alpha (JPEG, BMP, PPM), and kept everywhere else."""
    image = Image.new("RGBA", (8, 8), (10, 200, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, 4, 8))  # the left half transparent
    image = image.convert(mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        written = Image.open(io.BytesIO(encode_image(image, EXTENSIONS[fmt])))
        written.load()
    dropped = "A" in mode and fmt in ("JPEG", "BMP", "PPM")
    assert (f"{fmt} has no alpha channel: alpha dropped" in map(str, (w.message for w in caught))
            ) == dropped
    assert written.format == fmt
    assert ("A" in written.mode or "transparency" in written.info) == ("A" in mode and not dropped)


def test_notes_point_at_the_line_that_called_vaecodec():
    """A library's warning names its caller's line, not one inside the library."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vaecodec.compress(Image.new("CMYK", (16, 16)), quality=50)
        Image.new("CMYK", (16, 16)).save(io.BytesIO(), "VAE")  # through Pillow's save
    assert [(note.category, note.filename) for note in caught] == [(ConversionWarning,
                                                                    __file__)] * 2
