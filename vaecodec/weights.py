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
from torch.overrides import TorchFunctionMode

from . import entropy
from .errors import CodecError
from .model import LAMBDAS, VAE
from .prior import ExactPrior

FILE_NAME = "vaecodec.pt"
# Layout of the weights file's dictionary. 2: convolution kernels stored in float16 (half the
# size, no measurable change in rate or PSNR), config with the channel groups; 1: vaecodec ≤ 0.4.
FORMAT = 2
READABLE_FORMATS = (1, 2)


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


def upgrade(config, state_dict):
    """A model config and state dict of vaecodec ≤ 0.4 (weights format 1, checkpoints of then)
    in today's terms: its synthesis and hyper-synthesis widths, one channel group and seven λ;
    the context under today's names. Newer ones come back as they are."""
    if "groups" in config:
        return config, state_dict
    m = config["m"]
    n = config["n"]
    config = {**config, "synthesis": [n, n, n], "groups": [m], "hyper": [m, m * 3 // 2],
              "lambdas": list(LAMBDAS[:7])}
    renames = {"context_prediction.": "spatial_context.0.", "entropy_parameters.": "fusion.0."}
    upgraded = {}
    for key, value in state_dict.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
        upgraded[key] = value
    return config, upgraded


def read(source):
    """A weights file (path or bytes) → its dictionary, checked, config and state dict upgraded."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if state.get("format") not in READABLE_FORMATS:
        raise CodecError(f"unsupported weights format {state.get('format')}")
    config, state_dict = upgrade(state["config"], state["state_dict"])
    return {**state, "config": config, "state_dict": state_dict}


def save_weights(model, path):
    """Export `model` (eval copy) with freshly tabulated probability tables. Convolution kernels
    are stored in float16 and everything is computed from those values (the exact prior rounds
    them to multiples of 2^-20 from there)."""
    model = model.cpu().eval()
    state = {
        "format": FORMAT,
        "config": model.config(),
        # Contiguous, whatever the layout in memory: the file's bytes are the model's identity.
        "state_dict": {k: v.detach().to(torch.float16 if v.dim() == 4 else v.dtype)
                       .clone(memory_format=torch.contiguous_format)
                       for k, v in model.state_dict().items()},
        "y_tables": entropy.gaussian_tables().to_state(),
        "z_tables": entropy.factorized_tables(model.z_prior).to_state(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class _SkipRandomInit(TorchFunctionMode):
    """Within it, torch's random initializers of convolutions leave their tensor as it is: a
    model that a weights file is about to overwrite need not draw its convolutions' random
    start (model 2: 80-170 ms of a command that takes about 2 s, 8-20 ms without; the shipped
    model: 30 ms). A torch function mode applies to the thread that enters it only, where
    replacing torch's initializers would reach every thread of the program."""

    INITIALIZERS = (torch.nn.init.kaiming_uniform_, torch.nn.init.uniform_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.INITIALIZERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


class Codec:
    """A loaded weights file: the model in eval mode, its exact prior, its tables and its
    identity."""

    def __init__(self, path):
        path = Path(path)
        try:
            data = path.read_bytes()
            state = read(data)
            with _SkipRandomInit():
                self.model = VAE(**state["config"])
            self.model.load_state_dict(state["state_dict"])  # strict: every tensor overwritten
            self.y_tables = entropy.Tables.from_state(state["y_tables"])
            self.z_tables = entropy.Tables.from_state(state["z_tables"])
        except CodecError as error:
            raise CodecError(f"{path}: {error}") from None
        except Exception as error:  # torch's messages run over several lines: one here
            raise CodecError(f"cannot load weights {path}: {' '.join(str(error).split())}") \
                from None
        self.model.eval().requires_grad_(False)
        # oneDNN decodes about 15 % faster with the big transforms' weights channels-last (their
        # outputs follow). Only the float transforms change layout: the exact prior does not.
        for transform in (self.model.analysis, self.model.synthesis):
            transform.to(memory_format=torch.channels_last)
        self._priors = {}
        self.prior = self.prior_on(torch.device("cpu"))
        self.model_id = hashlib.sha256(data).digest()[:8]

    def prior_on(self, device):
        """The exact prior with its integer weights on `device`: the same tables as on the CPU,
        its convolutions where the transforms run (only each pass's means, tables and decoded
        latents cross to the CPU's entropy coder and back)."""
        if device not in self._priors:
            self._priors[device] = ExactPrior(self.model, device)
        return self._priors[device]


def load(path=None):
    """The codec for a weights file (default: the shipped one), loaded once per process."""
    return _load(Path(path or default_path()).resolve())


@lru_cache(maxsize=4)
def _load(path):
    return Codec(path)
