"""vaecodec: a learned image codec (compression VAE with a mean-scale hyperprior).

    import vaecodec
    data = vaecodec.compress(image, quality=75)   # PIL image, H×W×C uint8 array, bytes or path
    image = vaecodec.decompress(data)             # → PIL.Image.Image (data: bytes or a path)

Importing it also registers the `.vae` format with Pillow (`Image.open`, `Image.save`).
"""

from . import pillow_plugin  # noqa: F401 (registers the format with Pillow)
from .errors import CodecError, TargetWarning

__all__ = ["compress", "decompress", "CodecError", "TargetWarning", "__version__"]


def __getattr__(name):
    """compress and decompress load torch on first use, so `vaecodec --help` and `info` are fast;
    the version is read from the installed package's metadata (pyproject.toml), on first use."""
    if name in ("compress", "decompress"):
        from . import codec
        return getattr(codec, name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(__name__)
        except PackageNotFoundError:  # a source tree that was never installed
            raise AttributeError("vaecodec has no version: it is not installed") from None
    raise AttributeError(f"module 'vaecodec' has no attribute {name!r}")
