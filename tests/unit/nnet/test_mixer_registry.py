"""One registry of mixer names (nnet.MIXERS): the converter's specs and BiMamba2's directions come from it."""

import ast
from pathlib import Path

import pytest
import torch

from speechbrain_cald.convert import mixers as convert_mixers
from speechbrain_cald.nnet import MIXERS, BiMamba2, causal_mixers, get_mixer

PACKAGE = Path(__file__).resolve().parents[3] / "speechbrain_cald"


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_registered_mixer_says_whether_it_is_causal(name):
    assert isinstance(get_mixer(name).causal, bool)


def test_causal_mixers_are_the_two_mamba_directions():
    assert causal_mixers() == ["mamba", "mamba2"]


def test_converter_specs_cover_exactly_the_registry():
    assert set(convert_mixers.MIXER_SPECS) == set(MIXERS)
    assert set(convert_mixers._SPECIAL) <= set(MIXERS)


@pytest.mark.parametrize("mixer", ["linformer", "bimamba2"])
def test_bimamba2_refuses_a_bidirectional_direction_naming_the_causal_ones(mixer):
    with pytest.raises(ValueError, match=r"causal mixer, not '%s': expected one of \['mamba', 'mamba2'\]" % mixer):
        BiMamba2(16, mixer=mixer)


def test_bimamba2_directions_are_the_registrys_classes():
    bi = BiMamba2(16, mixer="mamba2", d_state=8, expand=1, headdim=8)
    assert type(bi.forward_mixer) is get_mixer("mamba2") and bi(torch.randn(1, 3, 16)).shape == (1, 3, 16)


def test_no_other_module_lists_mixer_names():
    """A dict or set literal holding two or more registered mixer names is a second registry (the
    registry itself and the converter's per-name specs, pinned above, aside)."""
    names = set(MIXERS)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in (PACKAGE / "nnet" / "__init__.py", PACKAGE / "convert" / "mixers.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            keys = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, ast.Set) else []
            found = {k.value for k in keys if isinstance(k, ast.Constant) and k.value in names}
            if len(found) >= 2:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {sorted(found)}")
    assert not offenders, "mixer names listed outside nnet.MIXERS:\n  " + "\n  ".join(offenders)
