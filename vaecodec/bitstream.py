"""The `.vae` container (format version 3). FORMAT.md in the repository root documents it byte by
byte; this module is the one place that writes and checks it.

Everything is validated before anything is allocated for decoding: magic, version, sizes against
the pixel limit, section lengths against the file length, and the CRC-32.
"""

import struct
import zlib
from dataclasses import dataclass

from .errors import CodecError

MAGIC = b"VAE\x1a"
VERSION = 3  # 3: checkerboard context; 2: hyperprior only; 1: the prior in float64
# The release that reads each older version.
READERS = {1: "vaecodec 0.1", 2: "vaecodec 0.2"}
MODES = ("L", "LA", "RGB", "RGBA")
MAX_PIXELS = 2 ** 26  # default limit on the padded width × height (67 MP), checked up front
STRIDE = 64  # the codec pads images to a multiple of this in both directions

_HEADER = struct.Struct(">4sB8sIIBHIII")  # magic, version, model id, w, h, mode, quality, lengths
_CRC = struct.Struct(">I")
OVERHEAD = _HEADER.size + _CRC.size


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

    def to_bytes(self):
        header = _HEADER.pack(MAGIC, VERSION, self.model_id, self.width, self.height,
                              MODES.index(self.mode), quality_code(self.quality),
                              len(self.z), len(self.y), len(self.alpha))
        body = header + self.z + self.y + self.alpha
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data, max_pixels=MAX_PIXELS):
        data = bytes(data)
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
         z_len, y_len, alpha_len) = _HEADER.unpack_from(data)
        expected = OVERHEAD + z_len + y_len + alpha_len
        if len(data) < expected:
            raise CodecError(f"truncated file ({len(data)} bytes, header says {expected})")
        if len(data) > expected:
            raise CodecError(f"{len(data) - expected} unexpected bytes after the end of the stream")
        body, (crc,) = data[:-_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(body) != crc:
            raise CodecError("file is corrupt (CRC-32 mismatch)")
        check_size(width, height, max_pixels)
        if mode >= len(MODES):
            raise CodecError(f"unknown image mode code {mode}")
        if not 100 <= quality <= 10000:
            raise CodecError(f"quality {quality / 100} outside 1..100")
        if alpha_len and "A" not in MODES[mode]:
            raise CodecError(f"alpha section in a {MODES[mode]} image")
        z_end = _HEADER.size + z_len
        y_end = z_end + y_len
        return cls(model_id, width, height, MODES[mode], quality / 100,
                   body[_HEADER.size:z_end], body[z_end:y_end], body[y_end:])


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


def quality_code(quality):
    """Quality as stored: hundredths, 100..10000."""
    if not 1 <= float(quality) <= 100:  # NaN fails too
        raise CodecError(f"quality must be between 1 and 100, got {quality}")
    return round(float(quality) * 100)
