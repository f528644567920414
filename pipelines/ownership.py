"""One MLflow store, several study folders: a cell is trained and recorded by one folder only.

Runs are found by run key, so two output folders given the same tracking store would each train
every cell (neither sees the other's state files) and both log into the same runs. Each study
folder gets a random id on first use (``<output>/folder_id``; moving or renaming the folder keeps
it); every cell run it creates carries ``unisd.folder_id`` and ``unisd.output_dir``. Before any
step runs, :func:`refuse_foreign_runs` refuses a study whose cells already have runs of another
folder; :func:`claim_run` checks again when a cell's run is found or created (a second driver
started at the same time), and adopts untagged runs (made before this check existed).
Two drivers that create the same cell's run within the same few milliseconds are not caught.

Departures from the paper: none.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pipelines.driver_lock import StudyRefusal

FOLDER_ID_FILE = "folder_id"
FOLDER_TAG = "unisd.folder_id"
OUTPUT_TAG = "unisd.output_dir"


class ForeignRunError(RuntimeError):
    """A cell whose MLflow run belongs to another study folder."""


class StudyFolder:
    """The identity of one study output folder."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        path = self.output_dir / FOLDER_ID_FILE
        if not path.exists():
            from pipelines.state import write_text_atomic

            write_text_atomic(path, uuid.uuid4().hex + "\n")
        self.folder_id = path.read_text(encoding="utf-8").strip()

    def tags(self) -> dict[str, str]:
        return {FOLDER_TAG: self.folder_id, OUTPUT_TAG: str(self.output_dir)}

    def foreign(self, tags: dict[str, str]) -> bool:
        return bool(tags.get(FOLDER_TAG)) and tags[FOLDER_TAG] != self.folder_id


def _refusal(folders: set[str], count: int, tracking_uri: str) -> str:
    where = ", ".join(sorted(folders))
    return (f"{count} cell(s) of this study are already recorded in the MLflow store "
            f"{tracking_uri} by the study folder {where}; running them here would train them "
            f"again into the same runs. Run the study with --output-dir {where} (watch it with "
            "`unisd study status`), or give this folder its own --tracking-uri (if that folder "
            "is gone for good, delete the study's experiment in that store to start over)")


def refuse_foreign_runs(tracker: Any, folder: StudyFolder, run_keys: set[str]) -> None:
    """Raise :class:`StudyRefusal` when runs of these keys belong to another folder."""
    foreign = [tags for key, runs in tracker.cell_run_tags().items() if key in run_keys
               for tags in runs if folder.foreign(tags)]
    if foreign:
        folders = {tags.get(OUTPUT_TAG, tags[FOLDER_TAG]) for tags in foreign}
        raise StudyRefusal(_refusal(folders, len(foreign), tracker.tracking_uri))


def claim_run(tracker: Any, folder: StudyFolder, run_id: str, cell_name: str,
              tags: dict[str, str] | None = None) -> None:
    """Tag an untagged run as ours; raise :class:`ForeignRunError` for another folder's run.
    ``tags``: the run's tags as just read (else they are read here)."""
    tags = tracker.run_tags(run_id) if tags is None else tags
    if folder.foreign(tags):
        raise ForeignRunError(
            f"cell {cell_name}: its MLflow run {run_id} belongs to the study folder "
            f"{tags.get(OUTPUT_TAG)} (not trained here twice; run it there)")
    if not tags.get(FOLDER_TAG):
        tracker.set_tags(run_id, folder.tags())
