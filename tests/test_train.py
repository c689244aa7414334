"""`vaecodec train`: trains, resumes from its checkpoint, exports weights the codec can use."""

import numpy as np
from click.testing import CliRunner

from vaecodec import codec, weights
from vaecodec.cli import main


def test_train_resume_export_and_use(tmp_path, photo):
    data = tmp_path / "images"
    data.mkdir()
    photo.resize((160, 130)).save(data / "a.png")
    args = ["train", str(data), "--checkpoint", str(tmp_path / "run.ckpt"), "--batch-size", "2",
            "--crop", "64", "--channels", "8", "--latents", "12"]
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
