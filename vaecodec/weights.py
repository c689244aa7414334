"""The weights file: model parameters plus the entropy coder's probability tables.

A plain `torch.save` dictionary of tensors and numbers, loadable with `weights_only=True` (no
pickled code runs). Its identity is the first 8 bytes of the file's SHA-256, which every
bitstream carries so that a file is never decoded with a model it was not made with.
"""

import hashlib
import io
import os
from functools import lru_cache
from pathlib import Path

import torch

from . import entropy
from .errors import CodecError
from .model import VAE
from .prior import ExactPrior

FILE_NAME = "vaecodec.pt"
FORMAT = 1  # layout of the weights file's dictionary


def default_path():
    """$VAECODEC_WEIGHTS, else the copy installed with the package, else the repository's."""
    if os.environ.get("VAECODEC_WEIGHTS"):
        return Path(os.environ["VAECODEC_WEIGHTS"])
    here = Path(__file__).resolve().parent
    for candidate in (here / "_weights" / FILE_NAME, here.parent / "weights" / FILE_NAME):
        if candidate.exists():
            return candidate
    raise CodecError(f"no weights file found (looked for {FILE_NAME} next to the package); "
                     "set VAECODEC_WEIGHTS to its path")


def save_weights(model, path):
    """Export `model` (eval copy) with freshly tabulated probability tables."""
    model = model.cpu().eval()
    state = {
        "format": FORMAT,
        "config": {"n": model.n, "m": model.m},
        # Contiguous, whatever the layout in memory: the file's bytes are the model's identity.
        "state_dict": {k: v.detach().clone(memory_format=torch.contiguous_format)
                       for k, v in model.state_dict().items()},
        "y_tables": entropy.gaussian_tables().to_state(),
        "z_tables": entropy.factorized_tables(model.z_prior).to_state(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Codec:
    """A loaded weights file: the model in eval mode, its exact prior, its tables and its
    identity."""

    def __init__(self, path):
        path = Path(path)
        try:
            data = path.read_bytes()
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if state.get("format") != FORMAT:
                raise CodecError(f"{path}: unsupported weights format {state.get('format')}")
            self.model = VAE(**state["config"])
            self.model.load_state_dict(state["state_dict"])
            self.y_tables = entropy.Tables.from_state(state["y_tables"])
            self.z_tables = entropy.Tables.from_state(state["z_tables"])
        except CodecError:
            raise
        except Exception as error:
            raise CodecError(f"cannot load weights {path}: {error}") from None
        self.model.eval().requires_grad_(False)
        # oneDNN decodes about 15 % faster with the big transforms' weights channels-last (their
        # outputs follow). Only the float transforms change layout: the exact prior does not.
        for transform in (self.model.analysis, self.model.synthesis):
            transform.to(memory_format=torch.channels_last)
        self.prior = ExactPrior(self.model)
        self.model_id = hashlib.sha256(data).digest()[:8]


def load(path=None):
    """The codec for a weights file (default: the shipped one), loaded once per process."""
    return _load(Path(path or default_path()).resolve())


@lru_cache(maxsize=4)
def _load(path):
    return Codec(path)
