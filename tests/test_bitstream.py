"""The .vae container: exact layout, and every kind of damage is refused with a clear error."""

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import vaecodec
from vaecodec import codec
from vaecodec.bitstream import (MAGIC, MAX_METADATA, OVERHEAD, VERSION, Bitstream,
                                check_size, quality_code)
from vaecodec.errors import CodecError


def with_crc(body):
    return body + struct.pack(">I", zlib.crc32(body))


def test_layout_is_exactly_as_documented():
    stream = Bitstream(model_id=bytes(range(1, 9)), width=3, height=2, mode="RGBA",
                       quality=75.5, z=b"abcd", y=b"efgh", alpha=b"i")
    header = bytes.fromhex(
        "5641451a" "04" "0102030405060708" "00000003" "00000002" "03" "1d7e"
        "00000000" "00000004" "00000004" "00000001")
    assert stream.to_bytes() == with_crc(header + b"abcdefghi")
    assert Bitstream.from_bytes(stream.to_bytes()) == stream
    assert OVERHEAD == len(header) + 4 == 44


def test_metadata_layout_is_exactly_as_documented():
    stream = Bitstream(model_id=bytes(8), width=1, height=1, mode="L", quality=1, z=b"zzzz",
                       y=b"yyyy", icc_profile=b"icc", exif=b"MM\0*", xmp=b"<x/>")
    header = bytes.fromhex(
        "5641451a" "04" "0000000000000000" "00000001" "00000001" "00" "0064"
        "00000023" "00000004" "00000004" "00000000")
    metadata = b"ICCP" + bytes.fromhex("00000003") + b"icc" + b"EXIF" + bytes.fromhex("00000004") \
        + b"MM\0*" + bytes.fromhex("584d5020") + bytes.fromhex("00000004") + b"<x/>"
    assert stream.to_bytes() == with_crc(header + metadata + b"zzzzyyyy")
    assert Bitstream.from_bytes(stream.to_bytes()) == stream
    exif_only = Bitstream(**{**vars(stream), "icc_profile": b"", "xmp": b""}).to_bytes()
    assert exif_only[24:28] == bytes.fromhex("0000000c")
    assert exif_only[40:52] == b"EXIF" + bytes.fromhex("00000004") + b"MM\0*"


def with_metadata(section):
    """A valid file (CRC included) whose metadata section is `section`."""
    header = bytes.fromhex("5641451a" "04" "0000000000000000" "00000001" "00000001" "00" "0064") \
        + struct.pack(">IIII", len(section), 0, 0, 0)
    return with_crc(header + section)


def test_unknown_metadata_chunks_are_skipped():
    section = b"C2PA" + struct.pack(">I", 5) + b"jumbf" + b"ICCP" + struct.pack(">I", 1) + b"p"
    assert Bitstream.from_bytes(with_metadata(section)) == Bitstream.from_bytes(
        with_metadata(b"ICCP" + struct.pack(">I", 1) + b"p"))


def test_empty_chunks_are_read_at_the_end_of_the_section_too():
    exif = b"EXIF" + struct.pack(">I", 4) + b"MM\0*"
    assert Bitstream.from_bytes(with_metadata(exif + b"C2PA" + bytes(4))).exif == b"MM\0*"
    stream = Bitstream.from_bytes(with_metadata(exif + b"XMP " + bytes(4)))
    assert (stream.exif, stream.xmp) == (b"MM\0*", b"")


@pytest.mark.parametrize("section,message", [
    (b"ICC", "truncated chunk header"),
    (b"ICCP" + struct.pack(">I", 2) + b"p", "chunk longer than the section"),
    (b"ICCP" + struct.pack(">I", 2 ** 32 - 1) + b"p", "chunk longer than the section"),
    ((b"EXIF" + struct.pack(">I", 1) + b"e") * 2, "two 'EXIF' chunks"),
    ((b"C2PA" + struct.pack(">I", 1) + b"j") * 2, "two 'C2PA' chunks"),  # unknown tags too
])
def test_damaged_metadata_is_refused(section, message):
    with pytest.raises(CodecError, match=message):
        Bitstream.from_bytes(with_metadata(section))


def test_metadata_limit_is_checked_from_the_header():
    # A header claiming 4 GiB of metadata that the file does not hold: nothing is allocated.
    claim = with_metadata(b"")[:24] + struct.pack(">I", 2 ** 32 - 1) + bytes(16)
    with pytest.raises(CodecError, match="truncated"):
        Bitstream.from_bytes(claim)
    big = with_metadata(b"EXIF" + struct.pack(">I", 100) + bytes(100))
    with pytest.raises(CodecError, match="108 bytes of metadata .* exceed the limit of 100"):
        Bitstream.from_bytes(big, max_metadata=100)
    assert Bitstream.from_bytes(big, max_metadata=108).exif == bytes(100)
    stream = Bitstream(model_id=bytes(8), width=1, height=1, mode="L", quality=1, z=b"", y=b"",
                       exif=bytes(MAX_METADATA))
    with pytest.raises(CodecError, match="exceed the limit"):
        stream.to_bytes()


@pytest.fixture(scope="module")
def small_file(photo):
    return vaecodec.compress(photo.crop((0, 0, 40, 30)), quality=50)


def test_header_fields_describe_the_image(photo, small_file):
    stream = Bitstream.from_bytes(small_file)
    assert (stream.width, stream.height, stream.mode, stream.quality) == (40, 30, "RGB", 50)
    assert small_file[:5] == MAGIC + bytes([VERSION])


def patched(data, offset, new):
    """`data` with the bytes at `offset` replaced and its CRC made valid again."""
    body = bytearray(data[:-4])
    body[offset:offset + len(new)] = new
    return with_crc(bytes(body))


@pytest.mark.parametrize("offset,new,message", [
    (3, b"\0", "bad magic"),  # the fourth byte of the magic too
    (21, b"\x04", "unknown image mode code 4"),
    (21, b"\xff", "unknown image mode code 255"),
    (22, struct.pack(">H", 0), "quality 0.0 outside 1..100"),
    (22, struct.pack(">H", 99), "quality 0.99 outside 1..100"),
    (22, struct.pack(">H", 10001), "quality 100.01 outside 1..100"),
    (22, struct.pack(">H", 65535), "quality 655.35 outside 1..100"),
])
def test_impossible_header_fields_are_refused_behind_a_valid_crc(small_file, offset, new, message):
    with pytest.raises(CodecError, match=message):
        Bitstream.from_bytes(patched(small_file, offset, new))


def test_a_zeroed_crc_is_checked_like_any_other(small_file):
    assert small_file[-4:] != bytes(4)
    with pytest.raises(CodecError, match="CRC-32"):
        Bitstream.from_bytes(small_file[:-4] + bytes(4))


def test_every_quality_code_round_trips():
    """The header stores hundredths: each quality the command takes (57.3) is stored as given."""
    assert [quality_code(code / 100) for code in range(100, 10001)] == list(range(100, 10001))
    stream = Bitstream(model_id=bytes(8), width=1, height=1, mode="L", quality=57.3, z=b"",
                       y=b"")
    assert stream.to_bytes()[22:24] == struct.pack(">H", 5730)


def test_the_pixel_limit_is_inclusive():
    check_size(8192, 8192)  # exactly the default limit, 2^26 pixels
    data = vaecodec.compress(np.zeros((64, 64, 3), np.uint8), max_pixels=4096)
    assert Bitstream.from_bytes(data, max_pixels=4096).width == 64
    with pytest.raises(CodecError, match="exceeds the limit of 4095"):
        Bitstream.from_bytes(data, max_pixels=4095)


def test_every_truncation_is_refused(small_file):
    for length in range(len(small_file)):
        with pytest.raises(CodecError):
            vaecodec.decompress(small_file[:length])


def test_every_single_bit_flip_is_detected(small_file):
    for position in range(len(small_file)):
        for bit in (0, 5):
            damaged = bytearray(small_file)
            damaged[position] ^= 1 << bit
            with pytest.raises(CodecError):
                vaecodec.decompress(bytes(damaged))


@pytest.mark.parametrize("data,message", [
    (b"", "bad magic"),
    (MAGIC, "truncated"),
    (b"GIF89a" + bytes(40), "bad magic"),
    (MAGIC + bytes([VERSION + 1]) + bytes(60), "version 5 is not supported.*upgrade vaecodec"),
    (MAGIC + bytes([3]) + bytes(60), "version 3 is not supported.*with vaecodec 0.4"),
    (MAGIC + bytes([2]) + bytes(60), "version 2 is not supported.*with vaecodec 0.2"),
    (MAGIC + bytes([1]) + bytes(60), "version 1 is not supported.*with vaecodec 0.1"),
])
def test_foreign_files_are_named(data, message):
    with pytest.raises(CodecError, match=message):
        vaecodec.decompress(data)


@pytest.mark.parametrize("data", [10 ** 13, None])
def test_what_is_not_bytes_is_refused(data):
    """Not read as a length: bytes(10**13) would try to allocate 10 TB."""
    with pytest.raises(CodecError, match="expected the bytes of a .vae file"):
        vaecodec.decompress(data)


@pytest.mark.parametrize("section", ["z", "y"])
def test_latent_sections_must_be_whole_words(small_file, section):
    """The range coder writes 32-bit words: a section cut inside one is refused with the header
    checks, before any weights are loaded (so `info` refuses it too)."""
    cut = getattr(Bitstream.from_bytes(small_file), section)[:-1]
    with pytest.raises(CodecError, match=f"{section} section of .* not a multiple of 4"):
        Bitstream.from_bytes(rewrite(small_file, **{section: cut}))


def test_an_opaque_image_carries_no_alpha_section(small_file):
    with pytest.raises(CodecError, match="alpha section in a RGB image"):
        Bitstream.from_bytes(rewrite(small_file, alpha=b"x"))


def test_trailing_garbage_is_refused(small_file):
    with pytest.raises(CodecError, match="unexpected bytes"):
        vaecodec.decompress(small_file + b"\0")


def rewrite(data, **fields):
    """The same stream with header fields replaced and a valid CRC."""
    stream = Bitstream.from_bytes(data)
    values = {name: getattr(stream, name) for name in stream.__dataclass_fields__}
    values.update(fields)
    return Bitstream(**values).to_bytes()


def test_absurd_size_is_refused_before_decoding(small_file):
    with pytest.raises(CodecError, match="100000×100000 exceeds the limit"):
        vaecodec.decompress(rewrite(small_file, width=100000, height=100000))


def test_thin_image_is_refused_by_its_padded_size(small_file):
    with pytest.raises(CodecError, match="exceeds the limit"):
        vaecodec.decompress(rewrite(small_file, width=2 ** 26, height=1))


@pytest.fixture(scope="module")
def with_alpha():
    return (Path(__file__).parent / "data" / "golden-rgba-q60.vae").read_bytes()


def test_alpha_and_model_are_checked_before_the_latents_are_decoded(monkeypatch, with_alpha):
    """A damaged alpha plane or another model's file fails at once, not after the decoding."""
    monkeypatch.setattr(codec, "decoded_latents", lambda *args: pytest.fail("latents decoded"))
    with pytest.raises(CodecError, match="alpha section is corrupt"):
        vaecodec.decompress(rewrite(with_alpha, alpha=b"not zlib"))
    with pytest.raises(CodecError, match="made with model"):
        vaecodec.decompress(rewrite(with_alpha, model_id=bytes(8)))


def test_nothing_may_follow_the_alpha_stream(with_alpha):
    stream = Bitstream.from_bytes(with_alpha)
    with pytest.raises(CodecError, match="alpha section is corrupt"):
        vaecodec.decompress(rewrite(with_alpha, alpha=stream.alpha + b"\0"))


def test_an_alpha_bomb_is_not_inflated(with_alpha):
    """200 MB of zeros in 200 kB: refused having inflated no more than the plane's size."""
    bomb = Bitstream.from_bytes(rewrite(with_alpha, alpha=zlib.compress(bytes(200 << 20), 9)))
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="alpha section is corrupt"):
            codec._decode_alpha(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_wrong_model_is_refused(small_file):
    with pytest.raises(CodecError, match="made with model 0000000000000000"):
        vaecodec.decompress(rewrite(small_file, model_id=bytes(8)))


def test_error_is_a_value_error():
    assert issubclass(vaecodec.CodecError, ValueError)
