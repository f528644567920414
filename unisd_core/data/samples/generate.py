"""Regenerate (or check) the shipped sample files from the item tables in this package.

    python -m unisd_core.data.samples.generate           # rewrite every <benchmark>_<split>.jsonl
    python -m unisd_core.data.samples.generate --check   # exit 1 if a file differs from the tables

The output is a pure function of the tables and ``SEED``: rerunning writes identical bytes.
Lines are JSON objects with the hub's field order, non-ASCII kept as is (``°C``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from unisd_core.data.samples.cose_items import cose_rows
from unisd_core.data.samples.gpqa_items import gpqa_rows
from unisd_core.data.samples.humaneval_items import humaneval_rows
from unisd_core.data.samples.mbpp_items import mbpp_rows
from unisd_core.data.samples.scienceqa_items import scienceqa_rows
from unisd_core.data.samples.toolalpaca_items import toolalpaca_rows

SEED = 20260527
SAMPLES_DIR = Path(__file__).resolve().parent
TEST_COUNT = 16  # eval items of the benchmarks that also have a train split; the rest is train


def split_off_test(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {"test": rows[:TEST_COUNT], "train": rows[TEST_COUNT:]}


def all_files() -> dict[str, list[dict[str, Any]]]:
    """File name -> rows, for every shipped sample."""
    mbpp_train, mbpp_test = mbpp_rows(SEED)
    files: dict[str, list[dict[str, Any]]] = {
        "mbpp_train.jsonl": mbpp_train,
        "mbpp_test.jsonl": mbpp_test,
        "humaneval_test.jsonl": humaneval_rows(SEED),
        "gpqa_test.jsonl": gpqa_rows(SEED),
    }
    for benchmark, rows in (("scienceqa", scienceqa_rows(SEED)), ("cose", cose_rows(SEED)),
                            ("toolalpaca", toolalpaca_rows(SEED))):
        for split, part in split_off_test(rows).items():
            files[f"{benchmark}_{split}.jsonl"] = part
    return files


def render(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, rows in sorted(all_files().items()):
        path = SAMPLES_DIR / name
        text = render(rows)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({len(rows)} rows)")
    if stale:
        print(f"stale sample files (rerun without --check): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
