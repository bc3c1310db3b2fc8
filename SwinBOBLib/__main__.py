"""``python -m SwinBOBLib`` is the ``swinbob`` command."""

import sys

from .cli import main

sys.exit(main())
