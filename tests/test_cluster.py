"""Compress and decompress on a local two-CPU Ray cluster: the same files, messages and exit
status as a local run."""

import io
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import ray
import ray.data
from click.testing import CliRunner
from PIL import Image

import vaecodec
from vaecodec import cluster, files
from vaecodec.cli import main


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def folder(tmp_path, photo):
    """Two good images, one that needs converting (a note), one bad file."""
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "a.png")
    photo.convert("L").save(images / "b.jpg", quality=95)
    photo.convert("P").save(images / "c.gif")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def assert_same_picture(png, reference):
    """Decoded with one thread or two: the same size and mode, pixels within a level."""
    image, expected = Image.open(io.BytesIO(png)), Image.open(io.BytesIO(reference))
    assert image.mode == expected.mode and image.size == expected.size
    assert np.abs(np.asarray(image).astype(int) - np.asarray(expected)).max() <= 1


def test_compress_on_ray_writes_what_a_local_run_writes(local_cluster, folder):
    (folder / "ray").mkdir()
    (folder / "ray" / "b.vae").write_bytes(b"keep me")  # refused, as locally, and not sent
    (folder / "local").mkdir()
    (folder / "local" / "b.vae").write_bytes(b"keep me")
    local = run("compress", folder / "images", "-o", folder / "local")
    on_ray = run("compress", folder / "images", "-o", folder / "ray", "--ray")
    assert local.exit_code == on_ray.exit_code == 1
    assert on_ray.stderr.replace(str(folder / "ray"), str(folder / "local")) == local.stderr
    assert "error:" in local.stderr and "note:" in local.stderr
    assert "2 of 4 files done, 2 failed" in local.stderr
    assert contents(folder / "ray") == contents(folder / "local")
    assert (folder / "ray" / "b.vae").read_bytes() == b"keep me"
    assert not [p for p in (folder / "ray").iterdir() if p.name.endswith(".tmp")]

    assert run("compress", folder / "images" / "b.jpg", "-o", folder / "ray",
               "--ray", "--force").exit_code == 0
    assert (folder / "ray" / "b.vae").read_bytes() != b"keep me"


def test_decompress_on_ray_at_an_address_writes_what_a_local_run_writes(local_cluster, folder):
    """A fresh process joins the cluster by its address; its stderr has our lines only. The
    workers run the synthesis on one thread each, this process on two: like two machines, they
    may differ by a level in a pixel (README)."""
    (folder / "vae").mkdir()
    assert run("compress", folder / "images", "-o", folder / "vae").exit_code == 1
    (folder / "vae" / "cut.vae").write_bytes((folder / "vae" / "a.vae").read_bytes()[:40])
    local = run("decompress", folder / "vae", "-o", folder / "local")
    on_ray = subprocess.run(
        [sys.executable, "-m", "vaecodec", "decompress", folder / "vae", "-o", folder / "ray",
         "--ray-address", local_cluster], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert on_ray.returncode == local.exit_code == 1
    assert on_ray.stderr.replace(str(folder / "ray"), str(folder / "local")) == local.stderr
    assert "error: " in local.stderr and "cut.vae" in local.stderr
    assert sorted(contents(folder / "ray")) == sorted(contents(folder / "local")) \
        == ["a.png", "b.png", "c.png"]
    for name, data in contents(folder / "ray").items():
        assert_same_picture(data, (folder / "local" / name).read_bytes())


def test_python_api_on_datasets(local_cluster, photo):
    """A dataset of file bytes, one of decoded arrays, and one of .vae bytes back to images."""
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    good = buffer.getvalue()
    rows = cluster.compress(ray.data.from_items(
        [{"bytes": good, "name": "good"}, {"bytes": b"junk", "name": "bad"}])).take_all()
    by_name = {row["name"]: row for row in rows}  # a dataset's rows come in any order
    expected = files.compress(good, 75)
    assert by_name["good"]["output"] == expected and by_name["good"]["error"] is None
    assert by_name["bad"]["output"] is None
    assert by_name["bad"]["error"] == "not a readable image (unknown format)"

    arrays = cluster.compress(ray.data.from_items([{"image": np.asarray(photo)}]), 75)
    assert arrays.take_all()[0]["output"] == expected

    images = cluster.decompress(ray.data.from_items([{"bytes": expected}]), ".png").take_all()
    assert_same_picture(images[0]["output"], files.decompress(expected, ".png"))


def test_rows_from_another_model_fail_one_by_one():
    """A worker whose weights differ from the caller's makes no file that a local run would not."""
    output, error, notes = cluster._convert_one(partial(files.compress, quality=75), b"",
                                                model_id=bytes(8))
    assert output is None and "this worker's weights are model" in error


def test_without_ray_the_option_says_how_to_install(monkeypatch, folder):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.delitem(sys.modules, "vaecodec.cluster", raising=False)
    monkeypatch.delattr(vaecodec, "cluster", raising=False)
    result = run("compress", folder / "images", "-o", folder / "out", "--ray")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --ray needs Ray: pip install 'vaecodec[ray]'"
