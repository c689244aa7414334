"""SIGTERM and Ctrl-C (SIGINT) stop the command cleanly at any moment.

The first signal raises KeyboardInterrupt in the main thread, wherever it is: click reports it as
"Aborted!" with exit status 1, and the entry point (`vaecodec.__main__`) does the same before
click runs and after it returns. An output file is written `shielded()`: a signal that arrives
meanwhile takes effect once the file is complete and renamed into place, so a file is either whole
or absent. A second signal while the first is being handled ends the process at once, as it would
without a handler, so a stuck clean-up can always be stopped; it cannot leave a partial file
either, since shielded writes hold it back too.

Only the command installs these handlers (`install`); the library leaves signals alone.
"""

import os
import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_shields = 0  # how many shielded() blocks are open
_pending = None  # the signal that arrived inside a shielded() block
_raised = False  # whether KeyboardInterrupt has been raised already


def install():
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)


def disarm():
    """From here on a signal changes nothing: the command's outcome is settled."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _on_signal(signum, frame):
    global _pending, _raised
    if _shields:
        _pending = signum
    elif _raised:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    else:
        _raised = True
        raise KeyboardInterrupt


@contextmanager
def shielded():
    """Hold back signals until the block is done (keep it short: a file write, a rename)."""
    global _shields, _pending
    _shields += 1
    try:
        yield
    finally:  # a block that fails (a write with the disk full) delivers the signal too
        _shields -= 1
        if _pending is not None and not _shields:
            signum, _pending = _pending, None
            _on_signal(signum, None)
