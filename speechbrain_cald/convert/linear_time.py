"""``to_linear_time``: replace every self-attention of a teacher by a linear-time mixer.

Everything but the replaced attention modules is kept bit for bit (the student
is a deep copy of the teacher); each attention slot gets the family's wrapper
around a fresh mixer (``wrapper.mixer``). The student carries
``student.cald_conversion``, a JSON-able record that ``save_student`` writes
beside the weights so ``load_student`` can rebuild the architecture.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Dict, List, Optional, Union

import torch  # noqa: F401  (used by the doctest)
from torch import nn

from speechbrain_cald.convert.attention_init import initialize_from_attention
from speechbrain_cald.convert.families import Family, find_family
from speechbrain_cald.convert.mixers import BuildContext, resolve_mixer
from speechbrain_cald.nnet import causal_mixers

__all__ = ["to_linear_time", "convert_in_place", "INITS", "count_parameters"]

INITS = ("default", "attention")
CONVERSION_FORMAT = 1


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (shared tensors counted once).

    Example
    -------
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _qualified_names(model: nn.Module) -> Dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def convert_in_place(
    model: nn.Module,
    mixer: Union[str, type] = "bimamba2",
    init: str = "default",
    family: Optional[str] = None,
    teacher_class: Optional[str] = None,
    mixer_options: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """Like :func:`to_linear_time` but modifies ``model`` itself (no copy).

    Used by ``load_student`` on a freshly built skeleton; prefer ``to_linear_time``.
    """
    mixer_options = dict(mixer_options or {})
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, found '{init}'")
    fam: Family = find_family(model, family)
    mixer_name, mixer_cls, spec = resolve_mixer(mixer)
    if fam.is_causal(model) and not getattr(mixer_cls, "causal", False):  # a custom class without it: bidirectional
        message = (
            f"family '{fam.name}': the teacher's self-attention is causal but mixer "
            f"'{mixer_name}' is bidirectional"
        )
        if fam.causal_required:
            raise ValueError(message + f"; use a causal mixer ({' or '.join(map(repr, causal_mixers()))})")
        warnings.warn(message + "; the student will see future frames", stacklevel=3)

    names = _qualified_names(model)
    shared: Dict[str, Any] = {}
    replaced: List[Dict[str, Any]] = []
    recorded: Optional[Dict[str, Any]] = None
    for parent, attr in fam.attention_slots(model):
        attention = getattr(parent, attr)
        d_model, num_heads = fam.attention_dims(attention)
        ctx = BuildContext(d_model, num_heads, fam.max_positions(model), fam.name, shared)
        options = spec.options(mixer_cls, ctx, mixer_options)
        recorded = options if recorded is None else recorded
        new_mixer = spec.build(mixer_cls, ctx, options)
        ref = next(attention.parameters(), None)
        if ref is not None:
            new_mixer = new_mixer.to(device=ref.device, dtype=ref.dtype)
        notes = initialize_from_attention(new_mixer, fam.projections(attention), init)
        new_mixer.train(attention.training)
        setattr(parent, attr, fam.wrap(new_mixer, attention))
        parent_name = names.get(id(parent), "")
        replaced.append(
            {
                "module": f"{parent_name}.{attr}" if parent_name else attr,
                "attention": type(attention).__name__,
                "init": notes,
            }
        )
    if fam.post_convert is not None:
        fam.post_convert(model)
    model.cald_conversion = {
        "format": CONVERSION_FORMAT,
        "family": fam.name,
        "mixer": mixer_name,
        "mixer_options": dict(recorded if recorded is not None else mixer_options),
        "init": init,
        "teacher_class": teacher_class or f"{type(model).__module__}.{type(model).__qualname__}",
        "replaced": replaced,
    }
    return model


def to_linear_time(
    model: nn.Module,
    mixer: Union[str, type] = "bimamba2",
    init: str = "default",
    family: Optional[str] = None,
    mixer_options: Optional[Dict[str, Any]] = None,
    **more_mixer_options: Any,
) -> nn.Module:
    """Turn a pretrained transformer into a linear-time student.

    Every self-attention found by the model's family entry (``FAMILIES``) is
    replaced by ``mixer``, wrapped to accept that family's attention call and
    padding mask; every other parameter and buffer is copied exactly. The
    teacher is not modified.

    Arguments
    ---------
    model : nn.Module
        The teacher: a transformers wav2vec2 / HuBERT / WavLM / Wav2Vec2-Conformer /
        Whisper / BERT / RoBERTa / GPT-NeoX model (base or with a head) or a
        SpeechBrain ``TransformerASR``.
    mixer : str or type
        ``"bimamba2"`` (default, the paper's speech student: ``expand=1,
        d_state=128, headdim=64`` unless given), ``"mamba2"`` /
        ``"mamba"`` (causal, for language models), ``"linformer"`` (keeps Q / K /
        V / out), a ``"module:Class"`` reference or an ``nn.Module`` class called as
        ``cls(d_model, **mixer_options)``.
    init : str
        ``"default"``: new mixer parameters take their own initialisation (as in
        the paper). ``"attention"``: initialise the mixer from the replaced
        attention where shapes allow (value -> x, key -> B, query -> C, output ->
        out_proj; see ``convert/attention_init.py``).
    family : str, optional
        Force a family entry instead of detecting it.
    mixer_options : dict, optional
        Constructor options as a dict (needed for an option named like an
        argument here, e.g. BiMamba2's inner ``{"mixer": "mamba"}``).
    **more_mixer_options
        More constructor options (e.g. ``d_state=128, expand=1, headdim=64`` or,
        for Linformer, ``k=256, share="kv", max_len=...``).

    Returns
    -------
    nn.Module
        The student (same class as the teacher), with ``student.cald_conversion``.

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> teacher = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, vocab_size=50)).eval()
    >>> student = to_linear_time(teacher, "bimamba2", d_state=8, expand=1, headdim=8, chunk_size=4)
    >>> type(student.encoder.layer[0].attention.self.mixer).__name__
    'BiMamba2'
    >>> type(teacher.encoder.layer[0].attention.self).__name__
    'BertSelfAttention'
    >>> student(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.shape
    torch.Size([1, 3, 32])
    """
    fam = find_family(model, family)  # fail before copying a large model
    if getattr(model, "cald_conversion", None) is not None or any(
        hasattr(getattr(parent, attr), "mixer") for parent, attr in fam.attention_slots(model)
    ):
        raise ValueError(
            f"{type(model).__name__} is already converted (its attention slots hold mixers): "
            "convert the original teacher"
        )
    student = copy.deepcopy(model)
    teacher_class = f"{type(model).__module__}.{type(model).__qualname__}"
    options = {**(mixer_options or {}), **more_mixer_options}
    return convert_in_place(student, mixer, init, family, teacher_class, options)
