"""The `.vae` container (format version 4). FORMAT.md in the repository root documents it byte by
byte; this module is the one place that writes and checks it.

Everything is validated before anything is allocated for decoding: magic, version, sizes against
the pixel and metadata limits, section lengths against the file length, and the CRC-32.
"""

import struct
import zlib
from dataclasses import dataclass
from numbers import Real

from .errors import CodecError

MAGIC = b"VAE\x1a"
VERSION = 4  # 4: metadata section; 3: checkerboard context; 2: integer prior; 1: float64 prior
# The release that reads each older version.
READERS = {1: "vaecodec 0.1", 2: "vaecodec 0.2",
           3: "vaecodec 0.4 (or 0.3, for a file that 0.3 made: its weights differ)"}
MODES = ("L", "LA", "RGB", "RGBA")
MAX_PIXELS = 2 ** 26  # default limit on the padded width × height (67 MP), checked up front
MAX_METADATA = 2 ** 24  # default limit on the metadata section (16 MiB), checked up front
STRIDE = 64  # the codec pads images to a multiple of this in both directions

# magic, version, model id, w, h, mode, quality, lengths of the metadata, z, y and alpha sections
_HEADER = struct.Struct(">4sB8sIIBHIIII")
_CRC = struct.Struct(">I")
_CHUNK = struct.Struct(">4sI")  # a metadata chunk's tag and length
OVERHEAD = _HEADER.size + _CRC.size
# The kinds of metadata a file carries, in the order they are written: Bitstream's field →
# (chunk tag, name in messages).
METADATA = {"icc_profile": (b"ICCP", "ICC profile"), "exif": (b"EXIF", "EXIF"),
            "xmp": (b"XMP ", "XMP")}


@dataclass(frozen=True)
class Bitstream:
    """One compressed image: header fields and the three coded sections."""

    model_id: bytes  # 8 bytes: SHA-256 prefix of the weights file
    width: int
    height: int
    mode: str  # one of MODES
    quality: float  # 1..100, in steps of 0.01
    z: bytes  # entropy-coded hyper-latent
    y: bytes  # entropy-coded latent residuals
    alpha: bytes = b""  # zlib-compressed alpha plane (modes LA and RGBA only)
    icc_profile: bytes = b""  # the ICC profile, as embedded in PNG's iCCP or JPEG's APP2
    exif: bytes = b""  # EXIF: TIFF header and IFDs, as in PNG's eXIf (JPEG's APP1 less Exif\0\0)
    xmp: bytes = b""  # the XMP packet (XML), as in PNG's iTXt XML:com.adobe.xmp or JPEG's APP1

    def to_bytes(self):
        metadata = self.metadata_section()
        check_metadata(len(metadata))
        header = _HEADER.pack(MAGIC, VERSION, self.model_id, self.width, self.height,
                              MODES.index(self.mode), quality_code(self.quality),
                              len(metadata), len(self.z), len(self.y), len(self.alpha))
        body = header + metadata + self.z + self.y + self.alpha
        return body + _CRC.pack(zlib.crc32(body))

    def metadata(self):
        """The metadata as keyword arguments of Bitstream: {field: bytes}."""
        return {field: getattr(self, field) for field in METADATA}

    def metadata_section(self):
        """The chunks of the metadata section: ICC profile, EXIF, then XMP, each only if present."""
        return b"".join(_CHUNK.pack(tag, len(value)) + value
                        for field, (tag, _) in METADATA.items() if (value := getattr(self, field)))

    @classmethod
    def from_bytes(cls, data, max_pixels=MAX_PIXELS, max_metadata=MAX_METADATA):
        try:  # any buffer (bytes, bytearray, memoryview); bytes(10**13) would allocate 10 TB
            data = bytes(memoryview(data))
        except TypeError:
            raise CodecError(f"expected the bytes of a .vae file, not {type(data).__name__}") \
                from None
        if data[:4] != MAGIC[:len(data)] or not data:
            raise CodecError("not a vaecodec file (bad magic bytes)")
        if len(data) < OVERHEAD:
            raise CodecError(f"truncated file ({len(data)} bytes, header alone is {OVERHEAD})")
        if data[4] != VERSION:
            remedy = (f"decode it with {READERS[data[4]]}" if data[4] in READERS
                      else "upgrade vaecodec")
            raise CodecError(f"format version {data[4]} is not supported "
                             f"(this vaecodec reads version {VERSION}); {remedy}")
        (_, _, model_id, width, height, mode, quality,
         metadata_len, z_len, y_len, alpha_len) = _HEADER.unpack_from(data)
        expected = OVERHEAD + metadata_len + z_len + y_len + alpha_len
        if len(data) < expected:
            raise CodecError(f"truncated file ({len(data)} bytes, header says {expected})")
        if len(data) > expected:
            raise CodecError(f"{len(data) - expected} unexpected bytes after the end of the stream")
        body, (crc,) = data[:-_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(body) != crc:
            raise CodecError("file is corrupt (CRC-32 mismatch)")
        check_size(width, height, max_pixels)
        check_metadata(metadata_len, max_metadata)
        if mode >= len(MODES):
            raise CodecError(f"unknown image mode code {mode}")
        if not 100 <= quality <= 10000:
            raise CodecError(f"quality {quality / 100} outside 1..100")
        if alpha_len and "A" not in MODES[mode]:
            raise CodecError(f"alpha section in a {MODES[mode]} image")
        for name, length in (("z", z_len), ("y", y_len)):
            if length % 4:  # the range coder writes 32-bit words
                raise CodecError(f"{name} section of {length} bytes: not a multiple of 4")
        z_start = _HEADER.size + metadata_len
        y_start = z_start + z_len
        alpha_start = y_start + y_len
        chunks = _metadata_chunks(body[_HEADER.size:z_start])
        return cls(model_id, width, height, MODES[mode], quality / 100,
                   body[z_start:y_start], body[y_start:alpha_start], body[alpha_start:],
                   **{field: chunks.get(tag, b"") for field, (tag, _) in METADATA.items()})


def _metadata_chunks(section):
    """The metadata section's chunks as {tag: bytes}. The caller ignores tags it does not know, so
    that a later writer can add a kind of metadata that older readers skip; a tag appears once."""
    chunks, offset = {}, 0
    while offset < len(section):
        if len(section) - offset < _CHUNK.size:
            raise CodecError("metadata section is corrupt (truncated chunk header)")
        tag, length = _CHUNK.unpack_from(section, offset)
        offset += _CHUNK.size
        if length > len(section) - offset:
            raise CodecError("metadata section is corrupt (chunk longer than the section)")
        if tag in chunks:
            raise CodecError(f"metadata section is corrupt (two {tag.decode('latin-1')!r} chunks)")
        chunks[tag] = section[offset:offset + length]
        offset += length
    return chunks


def check_size(width, height, max_pixels=MAX_PIXELS):
    """Refuse empty images, and images whose padded area (what the codec allocates) exceeds
    `max_pixels`."""
    if width < 1 or height < 1:
        raise CodecError(f"image has no pixels ({width}×{height})")
    padded = -(-width // STRIDE) * -(-height // STRIDE) * STRIDE ** 2
    if padded > max_pixels:
        raise CodecError(f"image of {width}×{height} exceeds the limit of {max_pixels} pixels"
                         + (f" ({padded} once padded to multiples of {STRIDE})"
                            if width * height <= max_pixels else ""))


def check_metadata(length, max_metadata=MAX_METADATA):
    """Refuse a metadata section larger than `max_metadata` bytes."""
    if length > max_metadata:
        kinds = ", ".join(name for _, name in METADATA.values())
        raise CodecError(f"{length} bytes of metadata ({kinds}) exceed the limit of "
                         f"{max_metadata} bytes")


def is_number(value):
    """A real number, but not a bool (True is not quality 1) nor a string ("50")."""
    return isinstance(value, Real) and not isinstance(value, bool)


def quality_code(quality):
    """Quality as stored: hundredths, 100..10000."""
    if not is_number(quality):
        raise CodecError(f"quality must be a number from 1 to 100, not {quality!r}")
    if not 1 <= float(quality) <= 100:  # NaN fails too
        raise CodecError(f"quality must be between 1 and 100, got {quality}")
    return round(float(quality) * 100)
