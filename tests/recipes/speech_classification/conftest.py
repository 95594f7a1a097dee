"""Tiny SLURP and VoxCeleb1 corpora in their distributed layouts (espeak-ng), and the recipes' prepare modules."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from speechbrain_cald.testing.slurp_voxceleb1 import write_slurp_sample, write_voxceleb1_sample

ROOT = Path(__file__).resolve().parents[3]
SLURP_RECIPE = ROOT / "recipes" / "SLURP" / "SLU"
VOXCELEB1_RECIPE = ROOT / "recipes" / "VoxCeleb1" / "SpeakerID"



def load_recipe_module(recipe: Path, name: str, alias: str):
    """Import ``recipe/name.py`` under ``alias`` (both recipes have a prepare.py)."""
    spec = importlib.util.spec_from_file_location(alias, recipe / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def slurp_prepare():
    return load_recipe_module(SLURP_RECIPE, "prepare", "slurp_prepare")


@pytest.fixture(scope="session")
def voxceleb1_prepare():
    return load_recipe_module(VOXCELEB1_RECIPE, "prepare", "voxceleb1_prepare")


@pytest.fixture(scope="session")
def slurp_corpus(tmp_path_factory):
    """``(root, written)``: 4 intents; train 2 records x 2 recordings, devel / test 1 x 2, synthetic 1 x 1 per intent."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("slurp") / "SLURP"
    written = write_slurp_sample(str(root), intents=["alarm_set", "weather_query", "play_music", "iot_hue_lightoff"])
    return root, written


@pytest.fixture(scope="session")
def voxceleb1_corpus(tmp_path_factory):
    """``(root, entries)``: 3 speakers x 2 videos x 3 utterances."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("vox") / "VoxCeleb1"
    entries = write_voxceleb1_sample(str(root))
    return root, entries


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    """A random 2-layer, width-32 wav2vec2 saved with save_pretrained (the real models' 320-sample frames)."""
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    return save_tiny_speech_model(str(tmp_path_factory.mktemp("w2v") / "wav2vec2"))


@pytest.fixture
def copy_of(tmp_path):
    """Copy a corpus tree into this test's tmp folder (for tests that damage it)."""

    def copy(root: Path, name: str = "") -> Path:
        dest = tmp_path / (name or root.name)
        shutil.copytree(root, dest)
        return dest

    return copy
