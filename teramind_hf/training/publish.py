"""Publish a trained pipeline into its run folder so that a killed run never leaves a half pipeline there.

A training run's folder also holds its checkpoints and logs, so it cannot be swapped whole (as
``teramind convert`` swaps its output folder). Instead the pipeline, its model card and the run summary are
written to a staging folder inside the run folder and then moved in with ``model_index.json`` last: the folder
is a pipeline (``from_pretrained`` needs ``model_index.json``) only once its weights, card and summary are all
there (a staging folder left by a killed publish is removed by the next). An earlier pipeline of the same run
loses its ``model_index.json`` first, so a move cut short never pairs an old index with new weights. A killed run
is finished by running it again with ``--resume_from_checkpoint latest``, which publishes the same weights again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

INDEX = "model_index.json"
STAGING_PREFIX = ".pipeline."


def publish_pipeline(output_dir: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(staging)`` to write the pipeline folder's contents (``save_pretrained``, card, summary), then
    move them into ``output_dir``, ``model_index.json`` last."""
    output_dir = Path(output_dir)
    for leftover in output_dir.glob(f"{STAGING_PREFIX}*"):  # staged by a publish that was killed: ours, never read
        if leftover.is_dir():
            shutil.rmtree(leftover)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
    try:
        write(staging)
        if not (staging / INDEX).is_file():
            raise RuntimeError(f"publish_pipeline: the writer left no {INDEX} in {staging}")
        (output_dir / INDEX).unlink(missing_ok=True)
        for entry in sorted(staging.iterdir()):
            if entry.name != INDEX:
                _move(entry, output_dir / entry.name)
        os.replace(staging / INDEX, output_dir / INDEX)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Move a file, or a folder file by file (a component folder of an earlier save is updated in place)."""
    if source.is_dir():
        target.mkdir(exist_ok=True)
        for entry in sorted(source.iterdir()):
            _move(entry, target / entry.name)
    else:
        os.replace(source, target)
