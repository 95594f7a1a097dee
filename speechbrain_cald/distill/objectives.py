"""Distillation objectives: which terms a student adds to its task loss, and their weights.

An objective turns what ``DistillBrain`` recorded for the student and the
teacher (layer states from the taps, attention maps when the objective asks
for them, logits) into weighted terms. Each term belongs to a *group* that the
guides switch on and off per step (``Guide.term_scales``): ``"layer"`` for the
intermediate terms, ``"logits"`` for the output KD (the hybrid guide drops the
layer group after its switch).

``OBJECTIVES``: name -> class.

=========== ============================================================ ===================
name        loss added to the task loss                                   source
=========== ============================================================ ===================
cald        ``alpha_layer * layer + alpha_logits * logits``: layer-normed  CALD (He & Garner
            MSE of each layer's output (``losses.layer_distill_loss``),   2025), reference
            KL of softmax(z / T) (``losses.logits_distill_loss``, T = 2)  code ``model.py``
minialbert  ``3 * (attention + hidden) + 5 * output``: attention-map KL   MiniALBERT
            and hidden-state ``1 - cos`` summed over the mapped layers    (Nouriborji et al.
            (``sharing_losses``), KL of the output distributions at T = 1 2023),
                                                                          ``general_distillation.py``
=========== ============================================================ ===================

A YAML picks one with ``distill_objective: !new:speechbrain_cald.distill.objectives.MiniALBERTObjective``;
without the key ``DistillBrain`` builds ``CALDObjective`` from ``alpha_layer``,
``alpha_logits``, ``temperature`` and ``layer_loss``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from speechbrain_cald.distill.losses import LAYER_LOSS_DEFAULTS, layer_distill_loss, logits_distill_loss
from speechbrain_cald.distill.sharing_losses import attention_kl_loss, hidden_cosine_loss
from speechbrain_cald.distill.taps import lengths_to_mask

__all__ = ["OBJECTIVES", "CALDObjective", "DistillObjective", "MiniALBERTObjective"]

# term name -> (weight, value)
Terms = Dict[str, Tuple[float, torch.Tensor]]


class DistillObjective:
    """Base class: named, weighted distillation terms in groups the guides can switch off.

    ``weights`` maps a term name to ``(group, weight)``; ``terms`` computes the
    terms whose scaled weight is positive. ``records_attention`` asks
    ``DistillBrain`` to tap the layers' attention maps too (``output.attentions``).
    """

    name = "base"
    records_attention = False

    def __init__(self, weights: Mapping[str, Tuple[str, float]]):
        self.weights = {k: (g, float(w)) for k, (g, w) in weights.items()}

    def scaled(self, scales: Mapping[str, float]) -> Dict[str, float]:
        """Each term's weight times its group's scale at this step (missing groups: 0)."""
        return {k: w * float(scales.get(g, 0.0)) for k, (g, w) in self.weights.items()}

    def weighted(self, scales: Mapping[str, float]) -> bool:
        """Whether any term counts at this step (else the teacher need not run)."""
        return any(w > 0 for w in self.scaled(scales).values())

    def terms(self, student: Any, teacher: Any, scales: Mapping[str, float], layer_map: Optional[Sequence[int]] = None) -> Terms:
        """``{name: (weight, value)}`` of the terms that count at this step.

        ``student`` / ``teacher`` are ``ModelOutput``s with ``states`` (and
        ``attentions`` when ``records_attention``), ``logits`` and ``mask(T)``.
        """
        weights = self.scaled(scales)
        return {k: (w, self.term(k, student, teacher, layer_map)) for k, w in weights.items() if w > 0}

    def term(self, name: str, student: Any, teacher: Any, layer_map: Optional[Sequence[int]]) -> torch.Tensor:
        """The value of one term (subclasses)."""
        raise NotImplementedError

    @staticmethod
    def frame_mask(output: Any) -> Optional[torch.Tensor]:
        """``(B, T)`` valid frames at the tapped layers (None without states)."""
        return output.mask(output.states[0].shape[1]) if output.states else None

    @staticmethod
    def logits_mask(output: Any) -> Optional[torch.Tensor]:
        """``(B, T)`` valid frames of frame logits; None for utterance logits ``(B, C)``."""
        if output.logits.dim() != 3:
            return None
        if getattr(output, "logits_lengths", None) is not None:
            return lengths_to_mask(output.logits_lengths, output.logits.shape[1]).to(output.logits.device)
        return output.mask(output.logits.shape[1])


class CALDObjective(DistillObjective):
    """CALD: ``alpha_layer * layer_distill_loss + alpha_logits * logits_distill_loss``.

    Arguments
    ---------
    alpha_layer, alpha_logits : float
        The paper's weights: ``alpha_layer`` 15 (TED-LIUM, SLURP, LM), 30
        (VoxCeleb1); ``alpha_logits`` 1 for TED-LIUM ASR, else 0.
    temperature : float
        KD temperature (2 in the reference code).
    layer_loss : mapping, optional
        ``layer_distill_loss`` options (default: the speech reference's).

    Example
    -------
    >>> obj = CALDObjective(alpha_layer=15.0, alpha_logits=0.0)
    >>> obj.scaled({"layer": 1.0, "logits": 1.0}), obj.weighted({"logits": 1.0})
    ({'layer': 15.0, 'logits': 0.0}, False)
    """

    name = "cald"

    def __init__(
        self,
        alpha_layer: float = 15.0,
        alpha_logits: float = 0.0,
        temperature: float = 2.0,
        layer_loss: Optional[Mapping] = None,
    ):
        super().__init__({"layer": ("layer", alpha_layer), "logits": ("logits", alpha_logits)})
        unknown = sorted(set(layer_loss or {}) - set(LAYER_LOSS_DEFAULTS))
        if unknown:
            raise KeyError(
                f"hparams `layer_loss`: unknown option(s) {unknown}; expected some of {sorted(LAYER_LOSS_DEFAULTS)}"
            )
        self.temperature = float(temperature)
        self.layer_loss = {**LAYER_LOSS_DEFAULTS, **(layer_loss or {})}

    def term(self, name, student, teacher, layer_map):
        if name == "layer":
            return layer_distill_loss(student.states, teacher.states, self.frame_mask(student), layer_map, **self.layer_loss)
        return logits_distill_loss(student.logits, teacher.logits, self.logits_mask(student), self.temperature)


class MiniALBERTObjective(DistillObjective):
    """MiniALBERT: ``alpha_attention * attention + alpha_hidden * hidden + alpha_output * output``.

    As ``general_distillation.py`` of nlpie-research/MiniALBERT: the
    attention-map KL (``KLDivLoss(reduction="mean")`` over the valid query rows
    of every head: ``key_reduction="mean"``) and the hidden-state ``1 - cos``
    of each student step against its mapped teacher layer, each **summed** over
    the mapped layers, weight 3 each; the KL of the output distributions at
    temperature 1, weight 5; the task loss (MLM there, CTC or CE here) weight
    1. The attention term needs layers that return their attention maps
    (SpeechBrain's encoder layers return ``(output, attention)``; HF layers
    with ``output_attentions=True``): a linear-time student has none.

    Arguments
    ---------
    alpha_attention, alpha_hidden, alpha_output : float
        Weights (MiniALBERT: 3, 3, 5).
    temperature : float
        Of the output KL (MiniALBERT: 1).
    key_reduction : {"mean", "sum"}
        Attention KL per row averaged over keys (the reference code) or summed
        (the KL of each row).
    layer_reduction : {"sum", "mean"}
        Attention and hidden terms summed over the mapped layers (the
        reference) or averaged.

    Example
    -------
    >>> obj = MiniALBERTObjective()
    >>> obj.scaled({"layer": 1.0, "logits": 1.0})
    {'attention': 3.0, 'hidden': 3.0, 'logits': 5.0}
    >>> obj.scaled({"layer": 0.0, "logits": 1.0})["attention"], obj.records_attention
    (0.0, True)
    """

    name = "minialbert"
    records_attention = True

    def __init__(
        self,
        alpha_attention: float = 3.0,
        alpha_hidden: float = 3.0,
        alpha_output: float = 5.0,
        temperature: float = 1.0,
        key_reduction: str = "mean",
        layer_reduction: str = "sum",
    ):
        super().__init__(
            {"attention": ("layer", alpha_attention), "hidden": ("layer", alpha_hidden), "logits": ("logits", alpha_output)}
        )
        self.temperature = float(temperature)
        self.key_reduction = key_reduction
        self.layer_reduction = layer_reduction

    def term(self, name, student, teacher, layer_map):
        if name == "attention":
            if not student.attentions or any(a is None for a in student.attentions + teacher.attentions):
                raise ValueError(
                    "MiniALBERTObjective: the attention term needs the layers' attention maps, but "
                    f"{'the student' if not student.attentions else 'a network'} gave none (a linear-time "
                    "student has no attention: set alpha_attention: 0)"
                )
            return attention_kl_loss(
                student.attentions, teacher.attentions, self.frame_mask(student), layer_map,
                key_reduction=self.key_reduction, layer_reduction=self.layer_reduction,
            )
        if name == "hidden":
            return hidden_cosine_loss(
                student.states, teacher.states, self.frame_mask(student), layer_map, layer_reduction=self.layer_reduction
            )
        return logits_distill_loss(student.logits, teacher.logits, self.logits_mask(student), self.temperature)


OBJECTIVES: Dict[str, type] = {cls.name: cls for cls in (CALDObjective, MiniALBERTObjective)}
