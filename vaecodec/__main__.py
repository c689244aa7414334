"""`python -m vaecodec` and the `vaecodec` command.

The signal handlers go in before anything else is imported and the whole command runs inside one
`try`, so SIGTERM or Ctrl-C at any moment after the interpreter reaches this file ends in exit
status 1, "Aborted!" on stderr and no partial file (see interrupts.py). Once the command's outcome
is settled, signals are ignored: the exit status and messages are the command's.
"""

import atexit
import os
import sys

from vaecodec import allocator, interrupts


def main():
    interrupts.install()
    allocator.keep_freed_memory()
    try:
        try:
            status = _command()
        finally:
            interrupts.disarm()
    except KeyboardInterrupt:  # before click runs, during the command, or as it returns
        print("Aborted!", file=sys.stderr)
        status = 1
    _exit(status)


def _exit(status):
    """sys.exit(status) less the interpreter's teardown, which with torch loaded is 0.4 s of a
    one-image command (a last collection over hundreds of thousands of objects, then libtorch's
    destructors). The exit handlers still run (Ray's shutdown among them) and the output is
    flushed; a status that is not a number takes the usual way."""
    if not isinstance(status, int):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: closed when the command started (`>&-`)
                stream.flush()
        except OSError:  # what Python's own exit does when it cannot flush stdout
            status = status or 120
    os._exit(status)


def _command():
    """Run the click command and return its exit status (click's own teardown is not used, so
    that the one above decides what a late signal does)."""
    import click

    from vaecodec.cli import main as command

    try:
        command.main(prog_name="vaecodec", standalone_mode=False)
    except click.Abort:  # how click passes on a KeyboardInterrupt
        raise KeyboardInterrupt from None
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exit:
        return exit.code
    return 0


if __name__ == "__main__":
    main()
