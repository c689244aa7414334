"""Where the transforms run and in what arithmetic: the choices, and the CPU side of --device
(no GPU here; the CUDA path differs only in where the tiles are sent)."""

import numpy as np
import pytest
import torch

from vaecodec import codec, compute, weights
from vaecodec.errors import CodecError


def test_unknown_device_or_precision_is_refused(photo):
    with pytest.raises(CodecError, match="unknown device 'tpu'"):
        codec.compress(photo, device="tpu")
    with pytest.raises(CodecError, match="unknown precision 'fp8'"):
        codec.compress(photo, precision="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_and_auto_is_the_cpu():
    with pytest.raises(CodecError, match="no CUDA device available"):
        compute.pick_device("cuda")
    assert compute.pick_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(compute, "bf16_is_native", lambda device: native)
    cpu = torch.device("cpu")
    assert compute.use_bf16("auto", cpu) is native
    assert compute.use_bf16("bf16", cpu) and not compute.use_bf16("fp32", cpu)
    assert compute.coding_bf16("auto", cpu) is native


def test_the_codec_keeps_cuda_in_fp32_unless_asked():
    """Training takes CUDA's bf16; compressing and decoding keep fp32 there, so that pixels stay
    within a level of a CPU decode."""
    cuda = torch.device("cuda")
    assert compute.use_bf16("auto", cuda)
    assert not compute.coding_bf16("auto", cuda) and not compute.coding_bf16("fp32", cuda)
    assert compute.coding_bf16("bf16", cuda)


def test_bf16_runs_in_bf16_and_files_decode_on_either_path(photo):
    """Forced bf16 works on any CPU (emulated where not native) and really changes the
    arithmetic; a file made on one path decodes on the other to the same picture, within two
    levels."""
    model = weights.load().model
    y = torch.randn(1, model.m, 6, 8)
    gain = torch.ones(1, model.m, 1, 1)
    fp32, bf16 = (compute.transforms(model, "cpu", p) for p in ("fp32", "bf16"))
    assert not torch.equal(fp32.synthesis(y, gain), bf16.synthesis(y, gain))
    for made in ("fp32", "bf16"):
        data = codec.compress(photo, 50, precision=made)
        pictures = [np.asarray(codec.decompress(data, precision=p)).astype(int)
                    for p in ("fp32", "bf16")]
        off = np.abs(pictures[0] - pictures[1])  # each within a level or two of exact
        assert off.max() <= 2 and np.mean(off >= 2) < 1e-3


@pytest.mark.parametrize("cin, cout, kernel, stride", [(96, 3, 5, 2), (8, 4, 3, 2), (6, 5, 5, 1)])
def test_sub_pixel_convolution_is_the_transposed_one(cin, cout, kernel, stride):
    """The synthesis' last layer as a convolution and pixel_shuffle gives the transposed
    convolution's output to fp32 rounding, at the model's shape and others."""
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                      output_padding=stride - 1)
    x = torch.randn(1, cin, 7, 9)
    with torch.no_grad():
        expected = deconv(x)
        torch.testing.assert_close(compute.SubPixel(deconv)(x), expected, rtol=0, atol=1e-5)
    assert expected.shape[-2:] == (7 * stride, 9 * stride)


@pytest.mark.parametrize("options", [dict(output_padding=0), dict(stride=(2, 1)),
                                     dict(dilation=2), dict(groups=2)])
def test_a_transposed_convolution_sub_pixel_cannot_copy_is_refused(options):
    """Among them one that is not a pure upscaling (no output padding: 2H - 1 rows out)."""
    deconv = torch.nn.ConvTranspose2d(4, 4, 3, **{"stride": 2, "padding": 1, "output_padding": 1,
                                                  **options})
    with pytest.raises(ValueError, match="does not scale its input by exactly its stride"):
        compute.SubPixel(deconv)
