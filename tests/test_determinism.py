"""Same image and quality → same bytes and same pixels, in fresh processes with 1 or 2 threads,
and with either memory layout of the transforms."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from vaecodec import codec, compute, weights

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


def test_channels_last_transforms_match_plain_ones(photo):
    """The loaded model keeps its big transforms channels-last for speed. Against the same weights
    in the default layout, y may differ only by float rounding and pixels by at most a level (the
    codec's promise across machines), whatever order oneDNN sums in."""
    loaded = weights.load()
    assert loaded.model.synthesis[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = weights.Codec(weights.default_path())
    for transform in (plain.model.analysis, plain.model.synthesis):
        transform.to(memory_format=torch.contiguous_format)
    rgb = np.asarray(photo)
    fast_fp32, plain_fp32 = (compute.transforms(c.model, "cpu", "fp32") for c in (loaded, plain))
    y_fast, y_plain = (codec.at_quality(c, codec.analyse(c, codec.padded(rgb), t), 60)[0]
                       for c, t in ((loaded, fast_fp32), (plain, plain_fp32)))
    assert torch.allclose(y_fast, y_plain, rtol=0, atol=1e-4)
    _, s, mean, _, _ = codec.latents(loaded, rgb, 60)
    y_hat = [torch.from_numpy(s) + mean]
    fast = codec.pixels(loaded, y_hat, 60, rgb.shape[1], rgb.shape[0], fast_fp32).astype(int)
    slow = codec.pixels(plain, y_hat, 60, rgb.shape[1], rgb.shape[0], plain_fp32).astype(int)
    assert np.abs(fast - slow).max() <= 1


def test_exported_weights_are_contiguous(tmp_path):
    """Re-exporting a loaded (channels-last) model writes the default layout, the same values
    (convolution kernels rounded to float16)."""
    weights.save_weights(weights.load().model, tmp_path / "w.pt")
    saved = torch.load(tmp_path / "w.pt", weights_only=True)["state_dict"]
    shipped = weights.read(weights.default_path())["state_dict"]
    assert saved.keys() == shipped.keys()
    assert all(tensor.is_contiguous() for tensor in saved.values())
    assert {saved[key].dtype for key in saved if saved[key].dim() == 4} == {torch.float16}
    assert all(torch.equal(saved[key], shipped[key].to(saved[key].dtype)) for key in shipped)


def test_skipping_the_random_start_stays_in_its_thread():
    """The load builds its model without drawing its convolutions' random weights (the file's
    replace them: see the next test), and only in the thread that loads: another thread's draws
    go on."""
    elsewhere = []
    with weights._SkipRandomInit():
        here = torch.nn.init.uniform_(torch.zeros(64))
        thread = threading.Thread(target=lambda: elsewhere.append(
            torch.nn.init.kaiming_uniform_(torch.zeros(8, 8))))
        thread.start()
        thread.join()
        here_kaiming = torch.nn.init.kaiming_uniform_(torch.zeros(8, 8))
    assert torch.count_nonzero(here) == 0 and torch.count_nonzero(here_kaiming) == 0
    assert torch.count_nonzero(elsewhere[0]) > 0
    assert torch.count_nonzero(torch.nn.init.uniform_(torch.zeros(64))) > 0


@pytest.mark.parametrize("name", ["vaecodec.pt", "candidate.pt"])
def test_loaded_model_holds_exactly_the_files_tensors(name):
    path = weights.default_path().with_name(name)
    if not path.exists():
        pytest.skip(f"no {name}")
    loaded = weights.Codec(path).model.state_dict()
    stored = weights.read(path)["state_dict"]
    assert loaded.keys() == stored.keys()
    assert all(torch.equal(loaded[key], stored[key].to(loaded[key].dtype)) for key in stored)


@pytest.mark.parametrize("damage,message", [
    (lambda state: state.update(format=3), "unsupported weights format 3"),
    # Strict loading: the model was built without its random start (above), so a tensor the
    # file lacks would be left as whatever memory held.
    (lambda state: state["state_dict"].pop("analysis.0.weight"),
     r"cannot load weights .*: Error\(s\) in loading state_dict for VAE: Missing key\(s\) in "
     'state_dict: "analysis.0.weight"'),
])
def test_weights_of_another_format_or_missing_a_tensor_are_refused(tmp_path, damage, message):
    state = torch.load(weights.default_path(), weights_only=True)
    damage(state)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(weights.CodecError, match=message) as refused:
        weights.Codec(tmp_path / "w.pt")
    assert "\n" not in str(refused.value)  # one line, as the command shows it
