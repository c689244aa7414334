from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecodec import tiles
from vaecodec.bench import psnr as bench_psnr

SAMPLE = Path(__file__).resolve().parent / "data" / "kodim23-crop.png"  # 384×256 from Kodak


@pytest.fixture(autouse=True)
def pillows_size_limit():
    """Pillow's limit as each test found it: the command lifts it in its process (files.py), and
    the command's tests run in this one."""
    limit = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = limit


@pytest.fixture(scope="session")
def photo():
    """A 128×96 crop of a real photo."""
    with Image.open(SAMPLE) as image:
        return image.convert("RGB").crop((108, 4, 236, 100))


def psnr(a, b):
    """PSNR of two images given as PIL images or arrays."""
    return bench_psnr(np.asarray(a), np.asarray(b))


def tiles_of(monkeypatch, side, large_image_side=None):
    """Tiles of `side` pixels (tiles.TILE_PIXELS) and of `large_image_side` (the same unless
    given) where tiles.tile_side picks the side for a larger image."""
    monkeypatch.setattr(tiles, "TILE_PIXELS", side)
    monkeypatch.setattr(tiles, "LARGE_IMAGE_TILE_PIXELS", large_image_side or side)
