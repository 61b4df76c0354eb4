"""Draw the perception-distortion plane from saved `srfeat eval --json` records.

    python3 scripts/plot_plane.py runs/plane/*.json -o docs/perception_distortion.png

Reads every file (each a JSON list of records; a later record for the same model and dataset
replaces an earlier one), writes the figure and prints the numbers as a Markdown table. The
evaluation itself can be split over several runs this way (one model per run, say) and drawn
once they are done; `srfeat eval --plane FILE.png` draws the same figure in one go.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# `python3 scripts/NAME.py` puts scripts/ first on the path, not the checkout: this checkout's srfeat,
# not whichever is installed (another worktree's, a release).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from srfeat.errors import SRFeatError
from srfeat.plane import plane_figure, plane_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="JSON files written by srfeat eval --json")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    records = []
    for path in args.records:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            parser.error(f"cannot read {path}: {error}")
        if not isinstance(loaded, list):
            parser.error(f"{path} is not a list of records as srfeat eval --json writes")
        records += loaded
    try:
        plane_figure(args.output, records)
    except SRFeatError as error:  # nothing to draw, or a figure that cannot be written
        parser.error(str(error))
    print(plane_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
