"""A file that vaecodec 0.5.1 made decodes, on any machine and with every later version that
ships the same weights, to the same latents and (within a level) the same pixels: the format as a
contract, the coder's integer frequencies included (FORMAT.md). When new weights ship, files of the
old ones decode only with the release that made them: make this file again with the new weights."""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from vaecodec import codec, weights
from vaecodec.bitstream import Bitstream

DATA = Path(__file__).resolve().parent / "data"
# An RGBA 96×80 crop of kodim23 (alpha a gradient) at quality 60, and its pixels decoded in fp32.
FILE, PIXELS = DATA / "golden-rgba-q60.vae", DATA / "golden-rgba-q60.png"
# SHA-256 of ŷ as the decoder forms it: float64 (multiples of 2^-14), channel-major.
LATENTS = "37a9e9b378b937ae5560e8186527d53c726f9b32a82768fcd18b490779f349e8"


def test_a_file_of_0_5_1_decodes_to_its_latents_and_pixels():
    stream = Bitstream.from_bytes(FILE.read_bytes())
    assert (stream.width, stream.height, stream.mode, stream.quality) == (96, 80, "RGBA", 60)
    y_hat = codec.decoded_latents(weights.load(), stream)
    assert hashlib.sha256(b"".join(block.numpy().tobytes() for block in y_hat)).hexdigest() \
        == LATENTS
    decoded = np.asarray(codec.decompress(FILE, precision="fp32")).astype(int)
    with Image.open(PIXELS) as image:
        expected = np.asarray(image).astype(int)
    assert np.abs(decoded[..., :3] - expected[..., :3]).max() <= 1  # fp32 on any CPU
    assert np.array_equal(decoded[..., 3], expected[..., 3])  # alpha is lossless
