"""`python -m vaecodec` is the `vaecodec` command."""

from .cli import main

main(prog_name="vaecodec")
