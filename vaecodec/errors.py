"""The one error type users see, and the warnings the command line shows as one-line notes."""

import os
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
    """Warn, pointing at the line that called into vaecodec, as a library's warnings should,
    however deep inside it the note arose."""
    package, frame, level = os.path.dirname(__file__), sys._getframe(1), 2  # 1: this line
    while frame is not None and frame.f_code.co_filename.startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, kind, stacklevel=level)
