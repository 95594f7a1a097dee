"""Which parameters of a converted student are new (not carried from the teacher).

``to_linear_time`` keeps every weight outside the replaced self-attentions and
builds a mixer in each attention slot. The mixers' parameters start from their
own initialisation, except those a mixer declares in ``kept_from_attention``
(Linformer: Q / K / V / out, copied from the attention). A recipe can give the
new parameters their own learning rate (``DistillBrain``'s ``new_params_lr``):
a Linformer projection initialised N(0, 1) barely moves at a fine-tuning rate
of 1e-4 in a short run.

Parameters partly copied by ``init="attention"`` (Mamba's ``in_proj`` rows) count
as new: the module was built by the conversion.
"""

from __future__ import annotations

from typing import List, Tuple

from torch import nn

__all__ = ["new_parameters"]


def new_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``[(name, parameter)]`` of the mixers the conversion built, minus what they kept.

    Arguments
    ---------
    model : nn.Module
        A student from ``to_linear_time`` / ``load_student``; any other model
        (no ``cald_conversion`` record) has none.

    Returns
    -------
    list of (str, nn.Parameter)
        In ``model.named_parameters()`` order, each shared parameter once.

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> from speechbrain_cald.convert import to_linear_time
    >>> teacher = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...     intermediate_size=32, vocab_size=30, max_position_embeddings=8))
    >>> student = to_linear_time(teacher, "linformer", k=4)
    >>> [name for name, _ in new_parameters(student)]  # doctest: +NORMALIZE_WHITESPACE
    ['encoder.layer.0.attention.self.mixer.E.weight', 'encoder.layer.0.attention.self.mixer.F.weight',
     'encoder.layer.1.attention.self.mixer.E.weight', 'encoder.layer.1.attention.self.mixer.F.weight']
    >>> new_parameters(teacher)
    []
    """
    record = getattr(model, "cald_conversion", None)
    if record is None:
        return []
    new_ids = set()
    for replaced in record["replaced"]:
        slot = model.get_submodule(replaced["module"])
        kept = set()
        for module in slot.modules():
            for attr in getattr(module, "kept_from_attention", ()):
                kept.update(id(p) for p in getattr(module, attr).parameters())
        new_ids.update(id(p) for p in slot.parameters() if id(p) not in kept)
    return [(name, p) for name, p in model.named_parameters() if id(p) in new_ids]
