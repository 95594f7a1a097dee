"""The ``Family`` record: what the converter must know about one model family.

A family entry is data plus a few small functions, never a subclass hierarchy:
adding a family is writing one ``Family(...)`` and calling ``register_family``.
The fields are a stable interface (``docs/interfaces.md``, convert section);
``extras`` is the place other modules (e.g. ``convert/share/``) keep their own
per-family facts without changing this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["Family", "Projection", "find_module", "get_path", "identity_lengths"]


@dataclass
class Projection:
    """One attention projection ``y = x @ weight.T + bias``: ``weight (out, in)``, ``bias (out,)`` or None."""

    weight: torch.Tensor
    bias: Optional[torch.Tensor] = None


def find_module(model: nn.Module, class_names: Tuple[str, ...]) -> Optional[nn.Module]:
    """First module in ``model.modules()`` whose class name is in ``class_names``.

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> type(find_module(net, ("ReLU",))).__name__
    'ReLU'
    >>> find_module(net, ("GELU",)) is None
    True
    """
    for module in model.modules():
        if type(module).__name__ in class_names:
            return module
    return None


def get_path(module: nn.Module, path: str) -> nn.Module:
    """``get_path(layer, "attention.self")`` -> ``layer.attention.self``."""
    for name in path.split("."):
        module = getattr(module, name)
    return module


def identity_lengths(model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
    """Frame lengths for families whose layers see one frame per input token / frame."""
    return input_lengths


def _no_max_positions(model: nn.Module) -> Optional[int]:
    return None


def _never_causal(model: nn.Module) -> bool:
    return False


@dataclass
class Family:
    """Where self-attention lives in one model family and how it is called.

    Arguments
    ---------
    name : str
        Registry key, e.g. ``"wav2vec2"``.
    description : str
        One line for error messages and the CLI (which classes, which mask form).
    encoder_classes : tuple of str
        Class names of the module that holds the encoder layers (searched in
        ``model.modules()``, so heads and base models both match).
    layers_attr : str
        Dotted path, inside that module, of the ``nn.ModuleList`` of layers.
    attention_paths : tuple of str
        Candidate dotted paths, inside one layer, of the self-attention to replace
        (the first that exists is used, e.g. ``("self_att", "mha_layer")``).
    wrapper : callable
        ``wrapper(mixer) -> nn.Module`` accepting the family's attention call and
        returning what the layer unpacks (a ``MixerWrapper`` subclass, or
        ``nnet.dropin.SpeechBrainAttention``); the mixer must sit at ``.mixer``.
    projections : callable
        ``projections(attention) -> {"q"|"k"|"v"|"o": Projection}``: the replaced
        attention's weights. A role the module does not own is absent: no ``"o"``
        means the layer keeps its output projection after the replaced module
        (BERT / RoBERTa ``attention.output.dense``).
    dims : callable
        ``dims(attention) -> (d_model, num_heads)``.
    frame_lengths_fn : callable
        ``(model, input_lengths (B,)) -> lengths (B,)`` at the layers.
    max_positions_fn : callable
        ``model -> int or None``: longest sequence the teacher supports (Linformer's
        ``max_len`` default).
    is_causal_fn : callable
        ``model -> bool``: whether the teacher's self-attention is causal.
    causal_required : bool
        If True, converting with a bidirectional mixer is an error (language
        models); otherwise only a warning.
    post_convert : callable, optional
        ``post_convert(student)`` run once after every slot is replaced (e.g.
        GPT-NeoX numbers its attention wrappers for the recurrent-state cache).
    save_format : str
        ``"hf"`` (``save_pretrained`` + safetensors) or ``"speechbrain"``.
    model_classes : tuple of str
        Dotted names (``module.Class``) of the model classes a saved folder of
        this family may name to be rebuilt (``hparams.json`` ``class``,
        ``teacher_class``), besides transformers' own model classes, which any
        folder may name. Names outside every family's list are refused
        (``convert/class_names.py``, docs/security.md).
    extras : dict
        Free per-family facts for other modules (e.g. parameter-sharing students).
    """

    name: str
    description: str
    encoder_classes: Tuple[str, ...]
    layers_attr: str
    attention_paths: Tuple[str, ...]
    wrapper: Callable[[nn.Module], nn.Module]
    projections: Callable[[nn.Module], Dict[str, Projection]]
    dims: Callable[[nn.Module], Tuple[int, int]]
    frame_lengths_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = identity_lengths
    max_positions_fn: Callable[[nn.Module], Optional[int]] = _no_max_positions
    is_causal_fn: Callable[[nn.Module], bool] = _never_causal
    causal_required: bool = False
    post_convert: Optional[Callable[[nn.Module], None]] = None
    save_format: str = "hf"
    model_classes: Tuple[str, ...] = ()
    extras: Dict[str, object] = field(default_factory=dict)

    def encoder(self, model: nn.Module) -> Optional[nn.Module]:
        """The module holding the layers, or None if ``model`` is not of this family."""
        return find_module(model, self.encoder_classes)

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` (a base model or any head on it) belongs to this family."""
        return self.encoder(model) is not None

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The encoder layers, in order (what distillation taps hook)."""
        encoder = self.encoder(model)
        if encoder is None:
            raise ValueError(
                f"family '{self.name}': no module of class {self.encoder_classes} in "
                f"{type(model).__name__}"
            )
        return get_path(encoder, self.layers_attr)

    def attention_path(self, layer: nn.Module) -> str:
        """The dotted path of the self-attention inside ``layer``."""
        for path in self.attention_paths:
            try:
                get_path(layer, path)
                return path
            except AttributeError:
                continue
        raise ValueError(
            f"family '{self.name}': layer {type(layer).__name__} has none of the attention "
            f"attributes {self.attention_paths}"
        )

    def attention_slots(self, model: nn.Module) -> List[Tuple[nn.Module, str]]:
        """``[(parent_module, attribute_name)]``, one per layer, where each self-attention lives."""
        slots = []
        for layer in self.layers(model):
            path = self.attention_path(layer)
            parent_path, _, attr = path.rpartition(".")
            parent = get_path(layer, parent_path) if parent_path else layer
            slots.append((parent, attr))
        return slots

    def wrap(self, mixer: nn.Module, attention: nn.Module) -> nn.Module:
        """A module with the family's attention call that runs ``mixer(x, lengths)``."""
        return self.wrapper(mixer)

    def attention_dims(self, attention: nn.Module) -> Tuple[int, int]:
        """``(d_model, num_heads)`` of a (not yet replaced) self-attention."""
        return self.dims(attention)

    def frame_lengths(self, model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames at the layers for ``input_lengths (B,)`` valid samples / tokens."""
        return self.frame_lengths_fn(model, input_lengths)

    def max_positions(self, model: nn.Module) -> Optional[int]:
        """Longest sequence the teacher was built for, or None if unbounded."""
        return self.max_positions_fn(model)

    def is_causal(self, model: nn.Module) -> bool:
        """Whether the teacher's self-attention is causal."""
        return self.is_causal_fn(model)
