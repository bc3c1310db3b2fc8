"""The ``swinbob`` command line: one module per command (``register(subparsers)`` adds its parser,
``cmd_*`` runs it), :mod:`.main` the parser and the error reporting. Top layer: nothing imports it.
"""

from SwinBOBLib.cli.main import main  # noqa: F401  (the console script SwinBOBLib.cli:main)
