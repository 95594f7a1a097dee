"""The registry of model families the converter knows: ``FAMILIES`` (name -> ``Family``).

Example
-------
>>> from speechbrain_cald.convert.families import FAMILIES
>>> sorted(FAMILIES)  # doctest: +NORMALIZE_WHITESPACE
['bert', 'gpt_neox', 'hubert', 'roberta', 'speechbrain_transformer_asr', 'wav2vec2',
 'wav2vec2_conformer', 'wavlm', 'whisper']
"""

from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from speechbrain_cald.convert.families.base import Family, Projection
from speechbrain_cald.convert.families.hf_speech import (
    HUBERT,
    WAV2VEC2,
    WAV2VEC2_CONFORMER,
    WAVLM,
    WHISPER,
)
from speechbrain_cald.convert.families.hf_text import BERT, GPT_NEOX, ROBERTA
from speechbrain_cald.convert.families.speechbrain_asr import SPEECHBRAIN_TRANSFORMER_ASR

__all__ = [
    "FAMILIES",
    "Family",
    "Projection",
    "UnsupportedModelError",
    "find_family",
    "register_family",
]

FAMILIES: Dict[str, Family] = {
    family.name: family
    for family in (
        WAV2VEC2,
        HUBERT,
        WAVLM,
        WAV2VEC2_CONFORMER,
        WHISPER,
        SPEECHBRAIN_TRANSFORMER_ASR,
        BERT,
        ROBERTA,
        GPT_NEOX,
    )
}


class UnsupportedModelError(TypeError):
    """A model no registered ``Family`` recognises."""


_HOW_TO_ADD = (
    "To add a family, describe it with speechbrain_cald.convert.families.Family(name=..., "
    "encoder_classes=(<class name of the module holding the layers>,), layers_attr=..., "
    "attention_paths=(<attribute of the attention inside a layer>,), wrapper=<a MixerWrapper "
    "accepting that attention's call>, projections=..., dims=...) and call "
    "speechbrain_cald.convert.register_family(family); see docs/interfaces.md (convert)."
)


def register_family(family: Family, overwrite: bool = False) -> Family:
    """Add ``family`` to ``FAMILIES`` (so ``to_linear_time`` and ``find_family`` know it).

    Arguments
    ---------
    family : Family
        The new entry.
    overwrite : bool
        Replace an entry of the same name instead of raising.

    Returns
    -------
    Family
        ``family``, for use as ``MY_FAMILY = register_family(Family(...))``.
    """
    if family.name in FAMILIES and not overwrite:
        raise KeyError(f"family '{family.name}' is already registered (pass overwrite=True to replace it)")
    FAMILIES[family.name] = family
    return family


def find_family(model: nn.Module, name: Optional[str] = None) -> Family:
    """The one registered family ``model`` belongs to.

    Arguments
    ---------
    model : nn.Module
        A teacher (base model or any head on it) or a converted student.
    name : str, optional
        Force this registry entry (must still match the model).

    Returns
    -------
    Family

    Raises
    ------
    UnsupportedModelError
        If no family (or several) match; the message lists the supported
        families and how to register a new one.

    Example
    -------
    >>> find_family(nn.Linear(2, 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.convert.families.UnsupportedModelError: no registered model family matches Linear ...
    """
    supported = "\n".join(f"  - {f.name}: {f.description}" for f in FAMILIES.values())
    if name is not None:
        if name not in FAMILIES:
            raise UnsupportedModelError(
                f"unknown family '{name}'; supported families:\n{supported}\n{_HOW_TO_ADD}"
            )
        family = FAMILIES[name]
        if not family.matches(model):
            raise UnsupportedModelError(
                f"family '{name}' does not match {type(model).__name__}: no module of class "
                f"{family.encoder_classes} inside it"
            )
        return family
    matches = [f for f in FAMILIES.values() if f.matches(model)]
    if not matches:
        raise UnsupportedModelError(
            f"no registered model family matches {type(model).__name__} (looked for the encoder "
            f"classes of each family among its modules). Supported families:\n{supported}\n{_HOW_TO_ADD}"
        )
    if len(matches) > 1:
        raise UnsupportedModelError(
            f"{type(model).__name__} matches several families {[f.name for f in matches]}: "
            "pass family=<name> to choose one"
        )
    return matches[0]
