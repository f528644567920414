"""``python -m pipelines``: run or watch a study given as a JSON list of cells.

The ``unisd`` CLI (``ablations``) is the researcher's entry point; this one exists for places
that have cells but no study file, chiefly ``ray job submit`` to a cluster (docs/cluster.md):

    python -m pipelines run cells.json --study-name NAME --output-dir DIR [--address auto]
        [--tracking-uri URI] [--max-retries 2] [--no-progress]
    python -m pipelines status DIR

Exit status: 0 when every cell is done, 1 when some failed, 3 when refused (another driver on the
folder, an unwritable folder, cells of another folder in the same MLflow store), 130 when
interrupted.

Departures from the paper: none.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cells import load_cells
from pipelines.runner import StudyRefusal, run_study
from pipelines.state import study_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume a study")
    run.add_argument("cells")
    run.add_argument("--study-name", required=True)
    run.add_argument("--output-dir", required=True)
    run.add_argument("--tracking-uri", default=None)
    run.add_argument("--address", default=None, help="Ray address; default: a local cluster")
    run.add_argument("--max-retries", type=int, default=2)
    run.add_argument("--no-progress", action="store_true")
    status = commands.add_parser("status", help="print a study's state as JSON")
    status.add_argument("output_dir")
    args = parser.parse_args(argv)
    if args.command == "status":
        found = study_status(args.output_dir)
        print(json.dumps({"study": found.study_name, **found.to_json()}, indent=1, default=str))
        return 0
    try:
        outcome = run_study(load_cells(args.cells), study_name=args.study_name,
                            output_dir=args.output_dir, tracking_uri=args.tracking_uri,
                            ray_address=args.address, max_retries=args.max_retries,
                            progress=not args.no_progress,
                            watch_hint=f"python -m pipelines status {args.output_dir}")
    except StudyRefusal as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 3
    for name, cell in outcome.cells.items():
        print(f"{name}: {cell.status} {json.dumps(cell.scores)} {cell.reason[:200]}")
    if outcome.interrupted:
        print("interrupted, re-run to resume", file=sys.stderr)
        return 130
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
