"""Every YAML in hparams/ and recipes/**/hparams/ loads and builds its objects.

A config that names an unknown class, a missing key or a broken ``!ref`` fails
here, in CI, instead of an hour into somebody's training run.
Each ``!PLACEHOLDER`` is overridden with a tiny value: paths point to a temporary
folder; other placeholders take a value from ``TINY_VALUES`` (add yours there).
"""

from pathlib import Path

import pytest
import yaml
from hyperpyyaml import load_hyperpyyaml

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = sorted(
    p
    for pattern in ("hparams/**/*.yaml", "recipes/**/hparams/*.yaml")
    for p in ROOT.glob(pattern)
)

# placeholder name -> tiny value (paths are filled in from tmp_path)
TINY_VALUES = {
    "seed": 1,
    "number_of_epochs": 1,
    "batch_size": 2,
    "num_workers": 0,
    "task": "sst2",  # GLUE recipes
}


def _tiny_speech_model(path: Path) -> None:
    """A tiny random wav2vec2 saved with save_pretrained: what speech recipes' `pretrained_dir` points to."""
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    save_tiny_speech_model(str(path), "wav2vec2")


# placeholder folders that must hold something to build the YAML: name -> filler
TINY_FOLDERS = {
    "pretrained_dir": _tiny_speech_model,
}


class _PlaceholderFinder(yaml.SafeLoader):
    """A YAML loader that tolerates every hyperpyyaml tag and records placeholders."""


def _any_tag(loader, suffix, node):
    if suffix == "PLACEHOLDER":
        return _PLACEHOLDER
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


_PLACEHOLDER = object()
_PlaceholderFinder.add_multi_constructor("!", _any_tag)


def placeholder_keys(text: str) -> list:
    """Top-level keys whose value is ``!PLACEHOLDER``."""
    data = yaml.load(text, Loader=_PlaceholderFinder) or {}
    return [k for k, v in data.items() if v is _PLACEHOLDER]


def is_object_fragment(text: str) -> bool:
    """True for a fragment whose root node is one object (``!new:...`` at the top).

    Such a file (e.g. ``hparams/guides/target.yaml``) is only meant to be
    ``!include:``d, so the dry run includes it from a one-line host file.
    """
    root = yaml.compose(text, Loader=_PlaceholderFinder)
    return root is not None and root.tag.startswith("!")


# recipe folder -> {placeholder: fixture naming a tiny checkpoint folder} (YAMLs that load one)
PRETRAINED_FIXTURES = {
    "recipes/Pile/LM": {"pretrained_dir": "tiny_pythia"},
    "recipes/GLUE/TextClassification": {"pretrained_dir": "tiny_roberta"},
    "recipes/IMDB/TextClassification": {"pretrained_dir": "tiny_roberta"},
    # not a placeholder there (<output_folder>/../pretrained, stage 1's output): overridden all the same
    "recipes/mini/Whisper": {"pretrained_dir": "tiny_whisper"},
}


def tiny_overrides(keys, tmp_path: Path, fixtures: dict = None) -> dict:
    out = {}
    for key in keys:
        if fixtures and key in fixtures:
            out[key] = str(fixtures[key])
        elif key in TINY_VALUES:
            out[key] = TINY_VALUES[key]
        else:  # folders and files: a fresh temporary path
            path = tmp_path / key
            path.mkdir(parents=True, exist_ok=True)
            if key in TINY_FOLDERS:
                TINY_FOLDERS[key](path)
            out[key] = str(path)
    return out


def test_configs_exist():
    assert CONFIGS, "no YAML found under hparams/ or recipes/**/hparams/"


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_builds(config: Path, tmp_path: Path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)  # relative output folders land in tmp
    text = config.read_text()
    recipe = str(config.parent.parent.relative_to(ROOT))
    fixtures = {k: request.getfixturevalue(v) for k, v in PRETRAINED_FIXTURES.get(recipe, {}).items()}
    overrides = tiny_overrides(placeholder_keys(text), tmp_path, fixtures)
    if "pretrained_dir:" in text:  # a fixture's model folder also where the YAML derives the path itself
        overrides.update({k: str(v) for k, v in fixtures.items()})
    if is_object_fragment(text):
        host = tmp_path / "host.yaml"
        host.write_text(f"fragment: !include:{config}\n")
        with open(host) as fin:
            hparams = load_hyperpyyaml(fin)
        assert not isinstance(hparams["fragment"], (dict, str)), f"{config} built no object"
        return
    with open(config) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    assert isinstance(hparams, dict) and hparams, f"{config} loaded to nothing"


def test_broken_config_fails(tmp_path: Path):
    """The dry run really builds objects: an unknown class in ``!new:`` fails."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: !new:torch.nn.NoSuchLayer\n  in_features: 3\n")
    with pytest.raises((ImportError, AttributeError, ValueError)):
        with open(bad) as fin:
            load_hyperpyyaml(fin)
