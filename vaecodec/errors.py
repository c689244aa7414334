"""The one error type users see, and the warnings the command line shows as one-line notes."""

import sys
import warnings


class CodecError(ValueError):
    """A bitstream or image that vaecodec cannot process; the message says why."""


class Note(UserWarning):
    """Something users should know about a file that was still written."""


class ConversionWarning(Note):
    """The input was converted to a mode the codec stores (e.g. CMYK → RGB)."""


class TargetWarning(Note):
    """Rate control missed its target (out of reach); the file is the nearest it found."""


def note(message, kind=ConversionWarning):
    """Warn, pointing at the line that called into vaecodec (or into Pillow, whose `save` calls
    the plugin), as a library's warnings should, however deep inside it the note arose."""
    frame, level = sys._getframe(1), 2  # level 1: this line
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
            "vaecodec", "PIL"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, kind, stacklevel=level)
