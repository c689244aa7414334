"""Same image and quality → same bytes and same pixels, in fresh processes with 1 or 2 threads."""

import subprocess
import sys

import pytest

from conftest import SAMPLE

SCRIPT = """
import hashlib, sys, numpy as np, torch
from PIL import Image
torch.set_num_threads(int(sys.argv[1]))
import vaecodec
image = Image.open(sys.argv[2]).convert("RGB")
data = vaecodec.compress(image, quality=float(sys.argv[3]))
pixels = np.asarray(vaecodec.decompress(data))
print(hashlib.sha256(data).hexdigest(), hashlib.sha256(pixels.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("quality", [20, 85])
def test_fresh_processes_agree_across_thread_counts(quality):
    results = {
        subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(SAMPLE),
                        str(quality)], check=True, capture_output=True, text=True).stdout
        for threads in (1, 2, 1, 2)
    }
    assert len(results) == 1, results
