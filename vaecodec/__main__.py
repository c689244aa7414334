"""`python -m vaecodec` and the `vaecodec` command.

The signal handlers go in before anything else is imported and the whole command runs inside one
`try`, so SIGTERM or Ctrl-C at any moment after the interpreter reaches this file ends in exit
status 1, "Aborted!" on stderr and no partial file (see interrupts.py). Once the command's outcome
is settled, signals are ignored: the exit status and messages are the command's.
"""

import sys

from vaecodec import interrupts


def main():
    interrupts.install()
    try:
        try:
            status = _command()
        finally:
            interrupts.disarm()
    except KeyboardInterrupt:  # before click runs, during the command, or as it returns
        print("Aborted!", file=sys.stderr)
        status = 1
    sys.exit(status)


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
