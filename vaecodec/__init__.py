"""vaecodec: a learned image codec (compression VAE with a mean-scale hyperprior).

    import vaecodec
    data = vaecodec.compress(image, quality=75)   # PIL image or H×W×C uint8 array → bytes
    image = vaecodec.decompress(data)             # → PIL.Image.Image
"""

from .codec import compress, decompress
from .errors import CodecError

__all__ = ["compress", "decompress", "CodecError"]
