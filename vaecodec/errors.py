"""The one error type users see, and the warnings the command line shows as one-line notes."""


class CodecError(ValueError):
    """A bitstream or image that vaecodec cannot process; the message says why."""


class Note(UserWarning):
    """Something users should know about a file that was still written."""


class ConversionWarning(Note):
    """The input was converted to a mode the codec stores (e.g. CMYK → RGB)."""


class TargetWarning(Note):
    """Rate control missed its target (out of reach); the file is the nearest it found."""
