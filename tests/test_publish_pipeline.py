"""A trained pipeline enters its run folder whole: weights, card and summary before model_index.json."""

import json
import os

import pytest
import torch

from .conftest import make_tiny_pipeline
from teramind_hf import TeraMindPipeline
from teramind_hf.training.publish import STAGING_PREFIX, publish_pipeline


def _writer(pipe, summary):
    def write(folder):
        pipe.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").write_text("card\n")
        (folder / "train_summary.json").write_text(json.dumps(summary))
    return write


def _staging_folders(run):
    return [p for p in run.iterdir() if p.name.startswith(STAGING_PREFIX)]


def _run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    return run


def test_published_pipeline_loads_with_its_card_and_summary_and_leaves_the_run_files(tmp_path):
    run = _run_folder(tmp_path)
    pipe = make_tiny_pipeline()
    publish_pipeline(run, _writer(pipe, {"steps": 2}))
    loaded = TeraMindPipeline.from_pretrained(run)
    for name, value in pipe.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value), name
    assert (run / "README.md").read_text() == "card\n"
    assert json.loads((run / "train_summary.json").read_text()) == {"steps": 2}
    assert (run / "train_log.jsonl").read_text() == '{"step": 1}\n' and (run / "checkpoints" / "checkpoint-2").is_dir()
    assert not _staging_folders(run)  # no staging folder left


def test_a_move_cut_short_leaves_no_model_index_beside_new_weights(tmp_path, monkeypatch):
    """A kill while the files move in (here: the last weight file refuses to move) leaves a folder that is not a
    pipeline, instead of an index that loads a card-less or half-written one."""
    run = _run_folder(tmp_path)
    publish_pipeline(run, _writer(make_tiny_pipeline(), {"steps": 1}))  # an earlier pipeline of the run
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if str(target).endswith(".safetensors"):
            raise OSError("killed")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        publish_pipeline(run, _writer(make_tiny_pipeline(), {"steps": 2}))
    monkeypatch.undo()
    assert not (run / "model_index.json").exists()
    assert not _staging_folders(run)
    # the run publishes again when it resumes; a staging folder a SIGKILL left behind goes then
    (run / f"{STAGING_PREFIX}killed" / "unet").mkdir(parents=True)
    publish_pipeline(run, _writer(make_tiny_pipeline(), {"steps": 2}))
    assert not _staging_folders(run)
    TeraMindPipeline.from_pretrained(run)
    assert json.loads((run / "train_summary.json").read_text()) == {"steps": 2}


def test_a_failing_writer_leaves_the_earlier_pipeline_as_it_was(tmp_path):
    run = _run_folder(tmp_path)
    pipe = make_tiny_pipeline()
    publish_pipeline(run, _writer(pipe, {"steps": 1}))
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def write(folder):
        make_tiny_pipeline().save_pretrained(str(folder), safe_serialization=True)
        raise RuntimeError("card failed")

    with pytest.raises(RuntimeError, match="card failed"):
        publish_pipeline(run, write)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
