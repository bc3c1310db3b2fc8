"""Refresh the docs pictures of the Slicer module: docs/slicer_render.png (`make docs-pictures`).

The MR sample segmented by the tiny seeded test model, rendered through Slicer's slice pipeline
(slicer-core, offscreen) by the same code the tests check (Testing/Python/slicer_harness.py). The
tests never write into the repository; this script is the one thing that does.

    .venv/bin/python benchmarks/render_slicer_docs.py [--output docs/slicer_render.png]
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "Python"))

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "docs" / "slicer_render.png"), help="PNG to write")
    args = parser.parse_args(argv)
    from SwinBOBModule import rendering

    core = slicer_harness.start_slicer_core()
    try:
        with tempfile.TemporaryDirectory(prefix="swinbob-docs-") as tmp:
            rendered = slicer_harness.render_result_views(core, Path(tmp))
            path = slicer_harness.render_figure(rendered, args.output)
    finally:
        rendering.releaseSnapshotView(core.scene)
        core.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
