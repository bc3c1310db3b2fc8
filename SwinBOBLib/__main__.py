"""``python -m SwinBOBLib`` is the ``swinbob`` command."""

import sys

from SwinBOBLib.cli import main

sys.exit(main())
