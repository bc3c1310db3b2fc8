"""The ``swinbob`` command line: one module per command (``register(subparsers)`` adds its parser,
``cmd_*`` runs it), :mod:`.main` the parser and the error reporting. Top layer: nothing imports it.
"""

from SwinBOBLib.cli import startup

startup.quiet_interrupts_while_starting()  # before the commands import torch (seconds)

from SwinBOBLib.cli.main import main  # noqa: E402,F401  (the console script SwinBOBLib.cli:main)
