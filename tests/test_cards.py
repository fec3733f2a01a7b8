"""Hub cards parse with huggingface_hub and their metadata holds the promised fields and values.

`ModelCard.validate()` posts the YAML to the Hub (network); these machines have none, so the metadata is
checked locally by `teramind_hf.hub_cards` against the expected fields/values instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard, SpaceCard

from teramind_hf import default_model_path
from teramind_hf.hub_cards import (
    MODEL_SECTIONS,
    check_model_card,
    check_space_card,
    official_model_card,
    space_card,
    write_cards,
)

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "hub_cards"


def test_official_card_template_parses_and_validates():
    path = CARDS / "official" / "README.md"
    card = ModelCard.load(str(path))
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets and "teramind" in card.data.tags
    assert check_model_card(path, sections=MODEL_SECTIONS) == []
    assert "TeraMindPipeline.from_pretrained" in card.text


def test_space_card_parses_and_validates():
    path = CARDS / "space" / "README.md"
    card = SpaceCard.load(str(path), repo_type="space")
    meta = card.data.to_dict()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "demo/app.py"
    assert (ROOT / meta["app_file"]).is_file()
    assert check_space_card(path) == []


def test_committed_cards_are_what_the_code_writes(tmp_path):
    """hub_cards/ is generated: re-writing gives the same files (sdk_version taken from the committed card)."""
    written = {p.parent.name: p for p in write_cards(tmp_path)}
    assert written["official"].read_text() == (CARDS / "official" / "README.md").read_text()
    committed_space = SpaceCard.load(str(CARDS / "space" / "README.md"), repo_type="space")
    regenerated = space_card(sdk_version=committed_space.data.sdk_version)
    assert str(regenerated) == str(committed_space)


def test_official_card_for_a_converted_folder(tmp_path):
    card = official_model_card("my-lab/teramind-mouse-brain", num_genes=229, datasets=["my-lab/mouse-brain-merfish"])
    card.save(str(tmp_path / "README.md"))
    loaded = ModelCard.load(str(tmp_path / "README.md"))
    assert loaded.data.datasets == ["my-lab/mouse-brain-merfish"]
    assert 'from_pretrained("my-lab/teramind-mouse-brain")' in loaded.text
    assert check_model_card(tmp_path / "README.md", sections=MODEL_SECTIONS) == []


def test_check_reports_bad_metadata(tmp_path):
    bad = tmp_path / "README.md"
    bad.write_text("---\nlibrary_name: transformers\nlicense: mit\ntags: teramind\n---\n\n# x\n")
    problems = " ".join(check_model_card(bad))
    assert "library_name" in problems and "license" in problems and "pipeline_tag" in problems and "tag " in problems
    space = tmp_path / "space.md"
    space.write_text("---\nsdk: streamlit\ncolorFrom: teal\npinned: maybe\n---\n")
    problems = " ".join(check_space_card(space))
    assert "sdk" in problems and "colorFrom" in problems and "pinned" in problems and "emoji missing" in problems


@pytest.mark.parametrize("path", [default_model_path() / "README.md", CARDS / "default_model" / "README.md"], ids=["embedded", "hub_cards"])
def test_default_model_card(path):
    """The embedded default model's card (written by the training run) parses and has the project metadata."""
    assert path.read_text().startswith("---"), f"{path} has no Hub metadata block"
    card = ModelCard.load(str(path))
    assert check_model_card(path) == []
    assert "phantom" in card.text.lower()  # says honestly what it was trained on


def test_space_requirements_match_pyproject():
    """The Space installs what the package and its demo extra declare (names compared, not pins)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["demo"]

    def names(lines):
        return {re.split(r"[<>=!~\[ ;@]", line.strip(), maxsplit=1)[0].lower().replace("_", "-") for line in lines if line.strip() and not line.lstrip().startswith("#")}

    space = (CARDS / "space" / "requirements.txt").read_text().splitlines()
    assert names(space) == names(declared)
