"""The one error type users see."""


class CodecError(ValueError):
    """A bitstream or image that vaecodec cannot process; the message says why."""


class ConversionWarning(UserWarning):
    """The input was converted to a mode the codec stores (e.g. CMYK → RGB)."""
