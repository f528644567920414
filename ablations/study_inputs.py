"""Local inputs a study names (model folders, data files) must exist before anything runs.

A missing local model folder or data file fails its step the same way on every attempt; found
here, ``unisd study validate`` and ``unisd study run`` list it as a study error (exit 2) before
anything runs. It is a check of this machine, not of the file: ``plan`` and ``report`` skip it,
and ``--no-check-inputs`` skips it for a study whose inputs exist only on a cluster (the shipped
``studies/paper.yaml`` names a ToolAlpaca JSONL that the user provides). What counts as local is
what the loaders treat as local: a model written as a path (``/``, ``./``, ``../``, ``~``;
:func:`unisd_core.models.zoo.resolve_model`) and a data source that
:func:`unisd_core.data.datasets.looks_like_path` calls a path. Relative paths are read against the
working directory, as the loaders read them. Hub ids are not checked here. A missing model path
whose name matches no known family is already refused by the study's family check.

Departures from the paper: none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablations.study_errors import StudyError
from unisd_core.data.datasets import looks_like_path

LOCAL_MODEL_PREFIXES = ("/", "./", "../", "~")


def missing_local_inputs(spec: Any) -> list[StudyError]:
    """One error per local model folder or data file the study names that does not exist."""
    errors: list[StudyError] = []
    for index, model in enumerate(spec.models):
        if model.startswith(LOCAL_MODEL_PREFIXES) and not Path(model).expanduser().is_dir():
            errors.append(StudyError(f"models[{index}]", "local model folder does not exist",
                                     model))
    for section in ("sources", "eval_sources"):
        for name, source in getattr(spec.data, section).items():
            if looks_like_path(source) and not Path(source).expanduser().exists():
                errors.append(StudyError(f"data.{section}.{name}",
                                         "local data file does not exist", source))
    return errors
