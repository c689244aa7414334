"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer): every input becomes a `.vae`
file and goes through `Bitstream.from_bytes` and `decompress`, under the shipped weights and
under a small model with five channel groups (so both context schedules are reached). Either
must return or raise CodecError; anything else, a hang past -timeout or memory past
-rss_limit_mb is a finding, which libFuzzer reports and saves with the input that caused it.

An input whose first byte is odd is the rest of a file without its CRC-32, which is appended, so
that mutations get past the checksum into the header checks and the entropy decoder; any other
input is taken as a whole file.

    pip install atheris
    python benchmarks/fuzz_atheris.py CORPUS_DIR -max_total_time=1800 -timeout=20 -rss_limit_mb=4096
    python benchmarks/fuzz_atheris.py FINDING     # runs one saved input again

CORPUS_DIR is seeded with small valid files of both models when empty. Images are limited to
2^18 pixels here so that an iteration stays short (the size checks themselves are tested apart).
"""

import os
import sys
import tempfile
import zlib
from pathlib import Path

import atheris
import numpy as np
import torch

# Not the model's and the prior's tensor arithmetic, whose branches do not depend on the file:
# atheris keeps every tensor that an instrumented comparison returns (`x < 0` gives a tensor),
# about 8 KB per input there, and a 30-minute run stopped at its 4 GB limit after 392 000
# inputs. The same inputs decoded in a plain loop hold their memory flat.
with atheris.instrument_imports(include=["vaecodec"],
                                exclude=["vaecodec.model", "vaecodec.prior"]):
    from vaecodec import codec, weights
    from vaecodec.bitstream import Bitstream
    from vaecodec.errors import CodecError
    from vaecodec.model import VAE

MAX_PIXELS = 1 << 18


def grouped_weights(path):
    """A small random model with five channel groups and a context that is not zero."""
    torch.manual_seed(0)
    model = VAE(16, 40, hyper=(16, 24))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("channel_context", "fusion")):
                parameter.normal_(0, 0.05)
    weights.save_weights(model, path)
    return path


def seeds(models):
    """Small valid files of every mode for each model."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-3, 4, (30, 70, 4)), axis=1).clip(0, 255).astype(np.uint8) + 60
    images = [smooth[:, :, :3], smooth[:20, :33], smooth[:9, :17, 0], smooth[:1, :1, :2]]
    return [codec.compress(image, quality, weights_path=model)
            for model in models for image, quality in zip(images, (50, 10, 90, 1))]


def main():
    corpus = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    models = [weights.default_path(),
              grouped_weights(Path(tempfile.mkdtemp()) / "grouped.pt")]
    if corpus and not Path(corpus).is_file() and not any(Path(corpus).glob("*")):
        Path(corpus).mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(seeds(models)):
            (Path(corpus) / f"seed-{i}.vae").write_bytes(b"\x01" + data[:-4])

    def one_input(data):
        if data[:1] and data[0] & 1:
            data = data[1:] + zlib.crc32(data[1:]).to_bytes(4, "big")
        try:
            Bitstream.from_bytes(data, MAX_PIXELS)
        except CodecError:
            return
        for model in models:
            try:
                image = codec.decompress(data, weights_path=model, max_pixels=MAX_PIXELS)
            except CodecError:
                continue
            stream = Bitstream.from_bytes(data, MAX_PIXELS)
            assert image.size == (stream.width, stream.height)

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
