"""`vaecodec train`: trains, resumes from its checkpoint, exports weights the codec can use."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, JpegImagePlugin

from vaecodec import codec, weights
from vaecodec.cli import main
from vaecodec.model import VAE
from vaecodec import train as training
from vaecodec.train import learning_rate


def test_train_resume_export_and_use(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((160, 130)).save(data / "a.png")
    args = ["train", str(data), "--checkpoint", str(tmp_path / "run.ckpt"), "--batch-size", "2",
            "--crop", "64", "--channels", "8", "--latents", "12", "--decay", "0.5"]
    first = CliRunner().invoke(main, args + ["--steps", "3"])
    assert first.exit_code == 0, first.output
    assert "stopped at step 3" in first.stderr
    second = CliRunner().invoke(main, args + ["--steps", "5", "--export", str(tmp_path / "w.pt")])
    assert second.exit_code == 0, second.output
    assert "resumed" in second.stderr and "stopped at step 5" in second.stderr

    loaded = weights.load(tmp_path / "w.pt")
    assert (loaded.model.n, loaded.model.m) == (8, 12)
    image = np.asarray(photo)[:40, :50]
    data_bytes = codec.compress(image, 50, weights_path=tmp_path / "w.pt")
    out = codec.decompress(data_bytes, weights_path=tmp_path / "w.pt")
    assert out.size == (50, 40)


def test_train_refuses_an_empty_folder(tmp_path):
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--checkpoint",
                                       str(tmp_path / "c.ckpt"), "--steps", "1"])
    assert result.exit_code == 1 and "no training images" in result.stderr


def test_init_starts_a_new_run_from_a_weights_file(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.save(data / "a.png")
    torch.manual_seed(1)
    start = VAE(8, 12)
    weights.save_weights(start, tmp_path / "start.pt")
    # A learning rate of 1e-12 leaves the weights where they started: the exported EMA must be
    # the init file's model (and its size, not the one asked for with --channels/--latents).
    result = CliRunner().invoke(main, [
        "train", str(data), "--checkpoint", str(tmp_path / "run.ckpt"), "--init",
        str(tmp_path / "start.pt"), "--steps", "1", "--lr", "1e-12", "--batch-size", "1",
        "--crop", "64", "--channels", "16", "--latents", "16", "--precision", "fp32",
        "--export", str(tmp_path / "out.pt")])
    assert result.exit_code == 0, result.output
    assert "started from" in result.stderr and "fp32 transforms" in result.stderr
    exported = torch.load(tmp_path / "out.pt", weights_only=True)
    assert exported["config"] == start.config()
    saved = torch.load(tmp_path / "start.pt", weights_only=True)["state_dict"]
    for name, value in saved.items():
        torch.testing.assert_close(exported["state_dict"][name], value, rtol=0, atol=1e-6)


def test_init_adds_a_context_to_weights_trained_without_one(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.save(data / "a.png")
    weights.save_weights(VAE(8, 12, groups=(12,)), tmp_path / "start.pt")
    state = torch.load(tmp_path / "start.pt", weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items()
                           if not k.startswith(("spatial_context", "fusion"))}
    torch.save(state, tmp_path / "start.pt")
    args = ["train", str(data), "--init", str(tmp_path / "start.pt"), "--steps", "1",
            "--batch-size", "1", "--crop", "64"]
    result = CliRunner().invoke(main, args + ["--checkpoint", str(tmp_path / "a.ckpt")])
    assert result.exit_code == 0, result.output
    assert "(6 new tensors initialized)" in result.stderr

    # Anything else that does not match is an error, not a silent re-initialization.
    for key, change in (("extra.weight", torch.zeros(1)), ("log_gain", None)):
        state_dict = dict(state["state_dict"])
        if change is None:
            del state_dict[key]
        else:
            state_dict[key] = change
        torch.save({**state, "state_dict": state_dict}, tmp_path / "start.pt")
        result = CliRunner().invoke(main, args + ["--checkpoint", str(tmp_path / f"{key}.ckpt")])
        assert result.exit_code == 1
        assert result.stderr == f"error: {tmp_path / 'start.pt'} does not fit this model: {key}\n"


def test_mixed_precision_keeps_the_prior_and_rates_in_fp32(photo):
    """Under bf16 autocast the transforms run in bf16, the prior of y (the hyper-synthesis and
    the context, whose means and scales the coder's tables come from) and the bits in fp32."""
    model = VAE(8, 12, groups=(4, 8))
    dtypes = {}
    for name, module in (("analysis", model.analysis), ("hyper_synthesis", model.hyper_synthesis),
                         ("channel_context", model.channel_context[0]),
                         ("spatial_context", model.spatial_context[1]),
                         ("fusion", model.fusion[1]), ("synthesis", model.synthesis)):
        module.register_forward_hook(
            lambda module, args, out, name=name: dtypes.__setitem__(name, out.dtype))
    x = torch.from_numpy(np.asarray(photo)[:64, :64].copy()).permute(2, 0, 1)[None] / 255
    with torch.autocast("cpu", torch.bfloat16):
        x_hat, bits = model(x, torch.tensor([3.0]))
    assert dtypes == {"analysis": torch.bfloat16, "hyper_synthesis": torch.float32,
                      "channel_context": torch.float32, "spatial_context": torch.float32,
                      "fusion": torch.float32, "synthesis": torch.bfloat16}
    assert bits.dtype == torch.float32 and x_hat.dtype == torch.float32


def test_learning_rate_warms_up_holds_then_decays_over_the_given_fraction():
    peak = 1e-3
    assert learning_rate(0, 0.0, peak) == peak / 500
    assert learning_rate(600, 0.5, peak, decay=0.5) == peak  # the decay starts here
    assert abs(learning_rate(600, 0.75, peak, decay=0.5) - (peak + peak / 20) / 2) < 1e-12
    assert learning_rate(600, 0.75, peak) == peak  # the default decays over the last 20 % only
    assert abs(learning_rate(600, 1.0, peak, decay=0.5) - peak / 20) < 1e-12


def test_training_follows_the_requested_decay(tmp_path, photo, monkeypatch):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((80, 80)).save(data / "a.png")
    seen = []

    def spy(run_step, progress, peak, decay):
        seen.append(decay)
        return learning_rate(run_step, progress, peak, decay)

    monkeypatch.setattr(training, "learning_rate", spy)
    training.train(data, tmp_path / "run.ckpt", steps=4, batch_size=1, crop=64, n=8, m=12,
                   decay=0.5, log=lambda line: None)
    assert seen == [0.5] * 4


def test_crops_are_windows_of_the_photos_or_their_mirror_images():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    crops = training.Crops([photo], torch.device("cpu"), max_zoom=1.0)
    batch, level = crops.batch(16, 24, 7)
    assert batch.shape == (16, 3, 24, 24) and batch.dtype == torch.float32
    assert level.shape == (16,) and 0 <= level.min() and level.max() < 7
    windows = {photo[top:top + 24, left:left + 24].tobytes()
               for top in range(17) for left in range(33)}
    seen = set()
    for crop in batch:
        pixels = (crop * 255).round().byte().permute(1, 2, 0).numpy()
        if pixels.tobytes() in windows:
            seen.add("plain")
        else:
            assert pixels[:, ::-1].tobytes() in windows
            seen.add("mirrored")
    assert seen == {"plain", "mirrored"}


def test_zoomed_out_crops_stay_inside_photos_large_enough():
    """A zoomed-out crop is cut from a region larger than the crop: only from a photo that large
    (here the grey one), never reaching into the padding around a small one (the white one)."""
    small = np.full((32, 32, 3), 255, dtype=np.uint8)
    large = np.full((100, 100, 3), 128, dtype=np.uint8)
    crops = training.Crops([small, large], torch.device("cpu"), max_zoom=3.0)
    values = set()
    for _ in range(20):
        batch, _ = crops.batch(4, 32, 7)
        assert batch.shape == (4, 3, 32, 32)
        for crop in batch:
            assert crop.min() == crop.max()
            values.add(round(crop.max().item() * 255))
    assert values == {128, 255}


@pytest.mark.parametrize("fmt, default", [("avif", "90"), ("jpeg", "94")])
def test_pack_images_writes_what_training_sees(tmp_path, photo, fmt, default):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((700, 520)).save(data / "big.png")
    photo.resize((100, 80)).save(data / "tiny.png")
    [expected] = training.load_training_images(data, min_side=256)
    errors, files = [], []
    for quality in ([], ["--quality", default], ["--quality", "50"]):
        pack = tmp_path / f"pack{len(files)}"
        result = CliRunner().invoke(main, ["pack-images", str(data), "-o", str(pack), "--format",
                                           fmt, *quality])
        assert result.exit_code == 0, result.output
        assert result.stderr == f"1 images in {pack}\n"
        [path] = pack.iterdir()
        assert path.name == f"0000.{fmt}"
        [packed] = training.load_training_images(pack)
        assert packed.shape == expected.shape == (512, 689, 3)
        errors.append(np.abs(packed.astype(int) - expected).mean())
        files.append(path.read_bytes())
    assert errors[0] < 1  # the default quality keeps the photo within a level on average
    assert files[0] == files[1]  # the documented default
    assert len(files[0]) > 2 * len(files[2]) and errors[2] > errors[0]  # --quality is applied
    if fmt == "jpeg":
        with Image.open(tmp_path / "pack0" / "0000.jpeg") as packed:
            assert JpegImagePlugin.get_sampling(packed) == 0  # 4:4:4


def test_pack_images_is_avif_unless_told(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((300, 300)).save(data / "a.png")
    assert CliRunner().invoke(main, ["pack-images", str(data), "-o", str(tmp_path / "p")]
                              ).exit_code == 0
    assert [path.suffix for path in (tmp_path / "p").iterdir()] == [".avif"]


def test_pack_images_writes_a_whole_new_folder_or_nothing(tmp_path, photo, monkeypatch):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((300, 300)).save(data / "a.png")
    photo.resize((300, 300)).save(data / "b.png")
    pack = tmp_path / "pack"

    def pack_images(*options):
        return CliRunner().invoke(main, ["pack-images", str(data), "-o", str(pack), *options])

    Image.init()
    with monkeypatch.context() as patch:
        patch.delitem(Image.SAVE, "AVIF", raising=False)
        result = pack_images()
        assert result.exit_code == 1
        assert result.stderr == ("error: this Pillow cannot write AVIF (built without it); pack "
                                 "as JPEG instead\n")
    written = Path.write_bytes

    def full_disk_at_the_second(path, data):
        if path.name == "0001.avif":
            raise OSError(28, "No space left on device")
        return written(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", full_disk_at_the_second)
        result = pack_images()
        assert result.exit_code == 1 and "No space left" in result.stderr
    assert sorted(tmp_path.iterdir()) == [data]  # nothing left behind
    assert pack_images().exit_code == 0
    result = pack_images("--format", "jpeg")
    assert result.exit_code == 1
    assert result.stderr == f"error: {pack} exists: give a new folder\n"
    assert sorted(path.name for path in pack.iterdir()) == ["0000.avif", "0001.avif"]


def test_torchrun_ranks_train_like_one_process_with_their_batches_together(tmp_path, photo):
    """Two CPU ranks (gloo) end with identical weights, equal to a single process that takes
    both ranks' examples in one batch; the checkpoint rank 0 wrote resumes in one process."""
    data = tmp_path / "images"
    data.mkdir()
    photo.save(data / "a.png")
    worker = [str(Path(__file__).parent / "ddp_worker.py"), str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", *worker, str(tmp_path / "two"), "2", "3"],
                   check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, *worker, str(tmp_path / "one"), "4", "3"], check=True,
                   env=env, capture_output=True)
    rank0, rank1, single = (torch.load(tmp_path / path, weights_only=True)
                            for path in ("two/rank0.pt", "two/rank1.pt", "one/rank0.pt"))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    for key in rank0:  # 3 steps of Adam at 10⁻³ each: the weights moved by about 3·10⁻³
        torch.testing.assert_close(rank0[key], single[key], rtol=0, atol=1e-5)
    subprocess.run([sys.executable, *worker, str(tmp_path / "two"), "4", "5"], check=True,
                   env=env, capture_output=True)
    assert torch.load(tmp_path / "two" / "run.ckpt", weights_only=True)["step"] == 5
