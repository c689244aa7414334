from pathlib import Path

import numpy as np
import pytest
from PIL import Image

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


@pytest.fixture(scope="session")
def photo():
    """A 96×128 crop of a real photo (Kodak), or a smooth synthetic image without the data."""
    path = KODAK / "kodim23.png"
    if path.exists():
        with Image.open(path) as image:
            return image.convert("RGB").crop((300, 100, 428, 196))
    yy, xx = np.mgrid[0:96, 0:128]
    array = np.stack([xx * 2, yy * 2, (xx + yy)], axis=2).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def psnr(a, b):
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / mse)
