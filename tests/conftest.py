from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parent / "data" / "kodim23-crop.png"  # 384×256 from Kodak


@pytest.fixture(scope="session")
def photo():
    """A 128×96 crop of a real photo."""
    with Image.open(SAMPLE) as image:
        return image.convert("RGB").crop((108, 4, 236, 100))


def psnr(a, b):
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / mse)
