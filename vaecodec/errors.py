"""The one error type users see."""


class CodecError(ValueError):
    """A bitstream or image that vaecodec cannot process; the message says why."""
