"""Image collections on a Ray cluster: compress and decompress as Ray Data pipelines.

    import ray, vaecodec.cluster
    images = ray.data.read_binary_files("photos/", include_paths=True)
    for row in vaecodec.cluster.compress(images, quality=60).iter_rows():
        ...  # row["output"]: the .vae bytes, or None and row["error"] says why

Each file is a task of its own (`map_batches`, one row per batch) on a worker process that loads
the model once and keeps it; the bytes are those of a local run, since the workers run the same
code (`files.py`) with the same weights, which they check. A bad file gives an error in its row
and the others go on. Needs `pip install 'vaecodec[ray]'`.
"""

import logging
import os
from functools import partial
from pathlib import Path

import numpy as np
import ray
import ray.data

from . import files
from .bitstream import MAX_PIXELS
from .errors import CodecError
from .images import OUTPUT_QUALITY

# Where a row's input is, first found first: file bytes (`ray.data.read_binary_files`), a decoded
# image array (`ray.data.read_images`, compress only), or a path the worker reads.
INPUTS = ("bytes", "image", "path")


def compress(images, quality=None, *, max_pixels=MAX_PIXELS, **options):
    """A Dataset of images (or a list of image file paths) → a Dataset with the columns
    `output` (`.vae` bytes), `error` and `notes` beside the input's other columns. `quality`
    (default 75) and `options` (target_bpp, target_psnr, max_bytes, strict, strip, effort) are
    those of `vaecodec.compress`.

    Rows from a list of paths keep its order when the result is iterated."""
    return _convert(images, partial(files.compress, quality=quality, max_pixels=max_pixels,
                                    **options))


def decompress(streams, extension=".png", *, quality=OUTPUT_QUALITY, max_pixels=MAX_PIXELS):
    """A Dataset of `.vae` file bytes (or a list of paths) → `output`: image file bytes in the
    format of `extension` (JPEG, WebP and AVIF at `quality`), with `error` and `notes` as in
    `compress`."""
    return _convert(streams, partial(files.decompress, extension=extension, quality=quality,
                                     max_pixels=max_pixels))


def connect(address=None):
    """Join the Ray cluster at `address` ($RAY_ADDRESS when None, else a new local one), unless
    this process already has, with Ray's own logging down to errors."""
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def in_order(dataset):
    """The rows of a `compress` or `decompress` result in their input's order, without Ray's
    progress bars (for a caller that shows its own)."""
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    return iter(dataset.iter_rows())


def _convert(dataset, convert):
    if not isinstance(dataset, ray.data.Dataset):
        paths = [{"path": os.fspath(path)} for path in dataset]
        dataset = ray.data.from_items(paths, override_num_blocks=max(len(paths), 1))
        dataset.context.execution_options.preserve_order = True
    from . import weights  # in the caller's process: its collector is left as it is

    runtime_env = ({"env_vars": {"VAECODEC_WEIGHTS": os.environ["VAECODEC_WEIGHTS"]}}
                   if os.environ.get("VAECODEC_WEIGHTS") else None)
    return dataset.map_batches(_convert_batch, batch_size=1, batch_format="numpy", num_cpus=1,
                               runtime_env=runtime_env,
                               fn_kwargs={"convert": convert,
                                          "model_id": weights.load().model_id})


def _convert_batch(batch, convert, model_id):
    """Runs on the workers: every row of `batch` converted on its own."""
    column = next((name for name in INPUTS if name in batch), None)
    if column is None:
        raise ValueError(f"rows need one of the columns {', '.join(INPUTS)}; got {list(batch)}")
    results = [_convert_one(convert, item, model_id) for item in batch[column]]
    kept = {name: values for name, values in batch.items() if name != column or name == "path"}
    return kept | {name: _objects(values)
                   for name, values in zip(("output", "error", "notes"), zip(*results))}


def _convert_one(convert, item, model_id):
    """(output, None, notes) or (None, the one-line error, [])."""
    try:
        with files.collected_notes() as notes:
            loaded = files.codec().weights.load()  # once per worker process, then cached
            if loaded.model_id != model_id:
                raise CodecError(f"this worker's weights are model {loaded.model_id.hex()}, "
                                 f"the caller's {model_id.hex()}")
            data = files.read(Path(item)) if isinstance(item, str) else item
            output = convert(data)
        return output, None, notes
    except Exception as error:
        return None, files.describe(error), []


def _objects(values):
    """A 1-D object array of `values` (np.array would make lists of equal length a 2-D array)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array
