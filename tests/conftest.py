from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecodec.bench import psnr as bench_psnr

SAMPLE = Path(__file__).resolve().parent / "data" / "kodim23-crop.png"  # 384×256 from Kodak


@pytest.fixture(scope="session")
def photo():
    """A 128×96 crop of a real photo."""
    with Image.open(SAMPLE) as image:
        return image.convert("RGB").crop((108, 4, 236, 100))


def psnr(a, b):
    """PSNR of two images given as PIL images or arrays."""
    return bench_psnr(np.asarray(a), np.asarray(b))
