"""Pillow plugin for `.vae` files, registered on `import vaecodec` as Pillow registers its own
formats: `Image.open("x.vae")` reads the header (size, mode, ICC profile, EXIF, XMP) and decodes
the pixels only when they are needed; `image.save("x.vae", quality=60)` encodes, and takes the
keyword arguments of `vaecodec.compress` (target_bpp, target_psnr, max_bytes, strict, strip,
effort).

Only the container is parsed on open, so this module does not import torch.
"""

import math

from PIL import Image, ImageFile

from .bitstream import MAGIC, METADATA, Bitstream, check_size
from .errors import CodecError
from .images import pillow_info

FORMAT = "VAE"
MIME_TYPE = "image/x-vae"
_SAVE_OPTIONS = ("quality", "target_bpp", "target_psnr", "max_bytes", "strict", "strip",
                 "effort")


def _accept(prefix):
    return prefix[:len(MAGIC)] == MAGIC


class VaeImageFile(ImageFile.ImageFile):
    """A `.vae` file opened by Pillow: the whole container is read and checked (CRC included) on
    open; the pixels are decoded on `load()`, which closes the file Pillow opened, as its own
    loaders do (a program that holds many loaded images holds no files)."""

    format = FORMAT
    format_description = "vaecodec learned image codec"

    def _open(self):
        # The size is Pillow's to limit, as for its own formats (Image.MAX_IMAGE_PIXELS: a warning
        # above it, an error above twice it), before any decoding. Pillow counts width × height
        # once this returns; the codec works on the image padded to multiples of STRIDE, up to
        # 64 times that for a thin one, so the error counts the padded area.
        self._stream = Bitstream.from_bytes(self.fp.read(), max_pixels=math.inf)
        if Image.MAX_IMAGE_PIXELS is not None:
            try:
                check_size(self._stream.width, self._stream.height, 2 * Image.MAX_IMAGE_PIXELS)
            except CodecError as error:
                raise Image.DecompressionBombError(
                    f"{error}, twice Image.MAX_IMAGE_PIXELS: could be a decompression bomb"
                ) from None
        self._size = (self._stream.width, self._stream.height)
        self._mode = self._stream.mode
        self.info.update(pillow_info(self._stream.metadata()))
        self.tile = []

    def load(self):
        if self._stream is not None:
            from .codec import decode  # torch: only once pixels are wanted

            # The decoded image's core, not a "raw" tile: Pillow would read such a tile straight
            # from the file (memory-mapped) whenever the file is large enough.
            self.im = decode(self._stream).im
            self._stream = None
            if self._exclusive_fp and self.fp:
                self.fp.close()
            self.fp = None
        return super().load()


def _save(image, fp, filename):
    from .codec import compress

    options = image.encoderinfo
    overrides = {key: options[key] for key in METADATA if key in options}
    if isinstance(overrides.get("exif"), Image.Exif):  # as Pillow's own savers take it
        overrides["exif"] = overrides["exif"].tobytes()
    if overrides:  # Pillow's convention: save(…, xmp=…) replaces the image's own
        image = image.copy()
        image.info.update(overrides)
    fp.write(compress(image, **{key: options[key] for key in _SAVE_OPTIONS if key in options}))


Image.register_open(FORMAT, VaeImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".vae")
Image.register_mime(FORMAT, MIME_TYPE)
