"""Load a benchmark split as Records, from the shipped samples, a local JSONL file or the hub.

``load_records(benchmark, split, source=None, *, limit=None, seed=0)``:
- ``split`` is ``"train"`` or ``"test"`` (the eval split, whatever the hub calls it);
- ``source`` None reads the shipped sample ``samples/<benchmark>_<split>.jsonl``; an existing file
  is a local JSONL file in the hub schema; an existing folder is a local copy of the hub
  repository, and anything else a hub id, both read with ``datasets.load_dataset`` (imported
  lazily, so the library works without network or hub). A source that looks like a path
  (``/...``, ``./...``, ``~...``, ``*.jsonl``) but does not exist raises FileNotFoundError
  rather than being sent to the hub.

Hub split mapping (method.md section 5): cose test -> validation; gpqa test -> the hub's only
split "train" (config gpqa_main); mbpp train -> config full/train, mbpp test -> config
sanitized/test; ScienceQA keeps only text-only items (image null), from any source. GPQA and
HumanEval are evaluation-only: asking for their train split is an error. ``limit`` keeps the first
``limit`` items after filtering; ``seed`` seeds the per-item option shuffle.

Departures from the paper: the shipped samples are small original items (no hub here), and
ToolAlpaca has no canonical hub copy, so its row schema is ours (see adapters/toolalpaca.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unisd_core.data.adapters import ADAPTERS, MalformedRowError
from unisd_core.data.adapters.scienceqa import is_text_only
from unisd_core.data.records import BENCHMARKS, Record

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SPLITS: tuple[str, ...] = ("train", "test")
EVAL_ONLY: frozenset[str] = frozenset({"gpqa", "humaneval"})

# (benchmark, our split) -> (hub config name or None, hub split name)
HUB_SPLITS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("scienceqa", "train"): (None, "train"),
    ("scienceqa", "test"): (None, "test"),
    ("cose", "train"): ("v1.11", "train"),
    ("cose", "test"): ("v1.11", "validation"),
    ("mbpp", "train"): ("full", "train"),
    ("mbpp", "test"): ("sanitized", "test"),
    ("toolalpaca", "train"): (None, "train"),
    ("toolalpaca", "test"): (None, "test"),
    ("gpqa", "test"): ("gpqa_main", "train"),
    ("humaneval", "test"): (None, "test"),
}


class DatasetFormatError(ValueError):
    """A source row cannot be turned into a Record; the message names the file and line."""


def check_benchmark_split(benchmark: str, split: str) -> None:
    """Raise ValueError listing the allowed values when (benchmark, split) is unknown."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; allowed: {', '.join(BENCHMARKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if (benchmark, split) not in HUB_SPLITS:
        allowed = [s for (b, s) in HUB_SPLITS if b == benchmark]
        raise ValueError(
            f"benchmark {benchmark!r} has no {split!r} split (evaluation only); "
            f"allowed: {', '.join(allowed)}"
        )


def sample_path(benchmark: str, split: str) -> Path:
    """Path of the shipped sample file for (benchmark, split)."""
    check_benchmark_split(benchmark, split)
    return SAMPLES_DIR / f"{benchmark}_{split}.jsonl"


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) for each non-blank line; location is ``path:line``."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetFormatError(f"{location}: invalid JSON ({error.msg})") from error
            yield location, row


def read_hub(benchmark: str, split: str, hub_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) from the hub; location is ``hub_id[config]/split#row``."""
    import datasets  # lazy: only hub sources need it, and it is slow to import

    config, hub_split = HUB_SPLITS[(benchmark, split)]
    try:
        dataset = datasets.load_dataset(hub_id, name=config, split=hub_split)
    except Exception as error:  # noqa: BLE001 - re-raised with the source named
        raise ValueError(
            f"cannot load {benchmark} {split} from {hub_id!r} (config {config!r}, split "
            f"{hub_split!r}); pass an existing local JSONL path or a reachable hub id: {error}"
        ) from error
    label = f"{hub_id}[{config}]/{hub_split}" if config else f"{hub_id}/{hub_split}"
    for row_number, row in enumerate(dataset):
        yield f"{label}#{row_number}", dict(row)


def looks_like_path(source: str | Path) -> bool:
    """A source meant as a local file (so a missing one is an error, not a hub lookup)."""
    text = str(source)
    return isinstance(source, Path) or text.endswith((".jsonl", ".json")) or text.startswith(
        ("/", "./", "../", "~")
    )


def iter_rows(
    benchmark: str, split: str, source: str | Path | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of the sample (None), a JSONL file, a local dataset folder or a hub id."""
    if source is None:
        return read_jsonl(sample_path(benchmark, split))
    path = Path(source).expanduser()
    if path.is_file():
        return read_jsonl(path)
    if path.is_dir():  # a local copy of the hub repository: read it the way the hub is read
        return read_hub(benchmark, split, str(path))
    if looks_like_path(source):
        raise FileNotFoundError(f"{benchmark} {split} source {str(source)!r} does not exist")
    return read_hub(benchmark, split, str(source))


def load_records(
    benchmark: str,
    split: str,
    source: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> list[Record]:
    """Records of (benchmark, split) from ``source`` (see the module docstring).

    Raises ValueError for an unknown benchmark/split and DatasetFormatError for a malformed row
    (naming the file and line, or hub row, and the missing or mistyped field).
    """
    check_benchmark_split(benchmark, split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    adapter = ADAPTERS[benchmark]
    records: list[Record] = []
    seen: dict[str, str] = {}
    # index = position in the source (before the ScienceQA image filter), so that a ScienceQA
    # id names the same hub row whatever is filtered or limited.
    for index, (location, row) in enumerate(iter_rows(benchmark, split, source)):
        if limit is not None and len(records) >= limit:
            break
        if benchmark == "scienceqa" and isinstance(row, dict) and not is_text_only(row):
            continue
        try:
            record = adapter.to_record(row, index, seed, split=split)
        except MalformedRowError as error:
            raise DatasetFormatError(f"{location}: malformed {benchmark} row: {error}") from error
        if record.id in seen:
            raise DatasetFormatError(
                f"{location}: duplicate id {record.id!r} (first at {seen[record.id]})"
            )
        seen[record.id] = location
        records.append(record)
    return records
