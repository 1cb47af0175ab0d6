"""`python -m socialflow` is the `socialflow` command."""

from socialflow.cli import main

main()
