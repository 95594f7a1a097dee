"""Utterance / sentence classification: the objective, pooling over valid frames, the model.

``UtteranceClassifier`` puts a classification head on any frame encoder called
as ``encoder(wavs, wav_lens) -> (frames (B, T, D), lengths (B,))`` (absolute
valid frames): the frame outputs are averaged over each utterance's valid
frames only (``masked_mean``), so padding a batch does not change an
utterance's logits, then a linear layer gives one logit per class.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_cald.distill.taps import lengths_to_mask

__all__ = [
    "PassThrough",
    "UtteranceClassifier",
    "UtteranceEmbedding",
    "UtteranceLogProbs",
    "classification_objective",
    "correct_predictions",
    "cross_entropy_per_character",
    "masked_mean",
]


def classification_objective(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of utterance logits.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, C)`` class logits.
    labels : torch.Tensor
        ``(B,)`` class ids (a trailing singleton dim ``(B, 1)``, as
        SpeechBrain's label encoders give, is accepted).
    label_smoothing : float
        As in ``torch.nn.functional.cross_entropy``.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    >>> float(classification_objective(logits, torch.tensor([0, 1]))) < 0.02
    True
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"classification: logits should be (B, C) and labels (B,), found "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits.float(), labels.long(), label_smoothing=label_smoothing)


def cross_entropy_per_character(
    logits: torch.Tensor, labels: torch.Tensor, characters: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy summed over the batch, divided by the batch's transcript characters.

    The CALD speech reference's classification loss (``loss_normalize_type=sample``):
    the summed cross-entropy over ``n_samples``, the characters of the batch's
    transcripts (SLURP) or of a dummy label (VoxCeleb1: ``'123'``, 3 per
    utterance), while its layer term is per frame.

    Arguments
    ---------
    logits, labels : torch.Tensor
        As :func:`classification_objective` takes them.
    characters : torch.Tensor
        ``(B,)`` characters per utterance (a batch with none counts 1).

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Example
    -------
    >>> logits, labels = torch.zeros(2, 4), torch.tensor([0, 1])
    >>> round(float(cross_entropy_per_character(logits, labels, torch.tensor([3, 5]))), 4)
    0.3466
    """
    mean = classification_objective(logits, labels)
    if characters.shape != logits.shape[:1]:
        raise ValueError(
            f"classification: characters should be (B,) = {tuple(logits.shape[:1])}, found {tuple(characters.shape)}"
        )
    return mean * logits.shape[0] / characters.sum().clamp_min(1).to(mean.dtype)


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of utterances whose arg-max class is the label.

    Example
    -------
    >>> correct_predictions(torch.tensor([[2.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1]))
    1
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return int((logits.argmax(-1) == labels).sum())


def masked_mean(frames: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Average of each sequence's valid frames.

    Arguments
    ---------
    frames : torch.Tensor
        ``(B, T, D)``, right-padded; what padded frames hold does not matter.
    lengths : torch.Tensor, optional
        ``(B,)`` absolute valid frames (None: all ``T``).

    Returns
    -------
    torch.Tensor
        ``(B, D)``.

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [99.0]], [[2.0], [4.0], [6.0]]])
    >>> masked_mean(x, torch.tensor([2, 3]))
    tensor([[2.],
            [4.]])
    """
    if frames.dim() != 3:
        raise ValueError(f"masked_mean: frames should be (B, T, D), found {tuple(frames.shape)}")
    batch, max_len = frames.shape[:2]
    if lengths is not None and (lengths.min() < 1 or lengths.max() > max_len):
        raise ValueError(
            f"masked_mean: lengths should lie in [1, T={max_len}], found {lengths.tolist()} "
            "(absolute frame counts, not SpeechBrain's relative lengths?)"
        )
    mask = lengths_to_mask(lengths, max_len, batch).to(frames.device)
    summed = frames.masked_fill(~mask[:, :, None], 0.0).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).to(frames.dtype)


class UtteranceClassifier(nn.Module):
    """A frame encoder, mean pooling over valid frames, dropout and a linear head.

    Arguments
    ---------
    encoder : torch.nn.Module
        Called as ``encoder(wavs, wav_lens) -> (frames (B, T, D), lengths (B,))``
        with SpeechBrain's relative ``wav_lens`` and absolute frame ``lengths``.
    input_size : int, optional
        ``D``, the encoder's output size (default: ``encoder.output_size``).
    n_classes : int, optional
        Number of classes. None: the head is made later by ``set_classes``
        (a recipe knows the count only once its label encoder exists).
    dropout : float
        Dropout on the pooled vector.

    Example
    -------
    >>> class Frames(nn.Module):  # a stand-in encoder: 2 samples per frame
    ...     def forward(self, wavs, wav_lens):
    ...         frames = wavs.unfold(1, 2, 2)
    ...         return frames, torch.round(wav_lens * frames.shape[1]).long()
    >>> model = UtteranceClassifier(Frames(), input_size=2, n_classes=3)
    >>> logits, lengths = model(torch.randn(2, 8), torch.tensor([1.0, 0.5]))
    >>> tuple(logits.shape), lengths.tolist()
    ((2, 3), [4, 2])
    >>> headless = UtteranceClassifier(Frames(), input_size=2)  # sized by the checkpoint it loads
    >>> _ = headless.load_state_dict(model.state_dict())
    >>> headless.n_classes
    3
    """

    def __init__(
        self, encoder: nn.Module, input_size: Optional[int] = None, n_classes: Optional[int] = None, dropout: float = 0.0
    ):
        super().__init__()
        self.encoder = encoder
        if input_size is None:
            if not hasattr(encoder, "output_size"):
                raise ValueError(
                    f"UtteranceClassifier: give input_size ({type(encoder).__name__} has no `output_size`)"
                )
            input_size = encoder.output_size
        self.input_size = int(input_size)
        self.dropout = nn.Dropout(dropout)
        self.head: Optional[nn.Linear] = None
        if n_classes is not None:
            self.set_classes(n_classes)

    @property
    def n_classes(self) -> Optional[int]:
        """The number of classes (None until the head exists)."""
        return None if self.head is None else self.head.out_features

    def set_classes(self, n_classes: int) -> None:
        """Make the head for ``n_classes`` (freshly initialised); nothing happens if it has that size already."""
        if n_classes < 2:
            raise ValueError(f"UtteranceClassifier: n_classes should be at least 2, got {n_classes}")
        if self.head is not None and self.head.out_features == n_classes:
            return
        param = next(self.encoder.parameters(), None)
        self.head = nn.Linear(self.input_size, int(n_classes))
        if param is not None:
            self.head.to(device=param.device, dtype=param.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a model built without n_classes takes its head size from the checkpoint
        weight = state_dict.get(prefix + "head.weight")
        if self.head is None and weight is not None:
            self.set_classes(weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(pooled (B, D), lengths (B,))``: the utterance vector before the head."""
        frames, lengths = self.encoder(wavs, wav_lens)
        return masked_mean(frames, lengths), lengths

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, C)`` logits of pooled vectors."""
        if self.head is None:
            raise RuntimeError(
                "UtteranceClassifier: the head has no size yet: call set_classes(n) with the number of "
                "labels (the recipes' train.py does so from the label encoder), or give n_classes"
            )
        return self.head(self.dropout(pooled))

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``wavs (B, N)``, relative ``wav_lens (B,)`` -> ``(logits (B, C), frame lengths (B,))``."""
        pooled, lengths = self.embed(wavs, wav_lens)
        return self.classify(pooled), lengths


# ---- the modules of an exported SpeechBrain EncoderClassifier folder ----------------
# EncoderClassifier calls compute_features(wavs), mean_var_norm(feats, wav_lens),
# embedding_model(feats, wav_lens) -> (B, 1, D) and classifier(emb) -> (B, 1, C).


class PassThrough(nn.Module):
    """``forward(x, *args) -> x``: EncoderClassifier's feature and normalisation slots (the encoder does both).

    Example
    -------
    >>> PassThrough()(torch.ones(2), torch.ones(1)).tolist()
    [1.0, 1.0]
    """

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x


class UtteranceEmbedding(nn.Module):
    """``(wavs, wav_lens) -> (B, 1, D)``: an ``UtteranceClassifier``'s pooled vector (EncoderClassifier's ``embedding_model``)."""

    def __init__(self, model: UtteranceClassifier):
        super().__init__()
        self.model = model

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        return self.model.embed(wavs, wav_lens)[0].unsqueeze(1)


class UtteranceLogProbs(nn.Module):
    """``(B, 1, D) -> (B, 1, C)`` class log-probabilities of pooled vectors (EncoderClassifier's ``classifier``).

    Example
    -------
    >>> class Frames(nn.Module):
    ...     def forward(self, wavs, wav_lens):
    ...         return wavs.unfold(1, 2, 2), torch.round(wav_lens * wavs.shape[1] / 2).long()
    >>> model = UtteranceClassifier(Frames(), input_size=2, n_classes=3).eval()
    >>> wavs = torch.randn(2, 8)
    >>> emb = UtteranceEmbedding(model)(wavs, torch.ones(2))
    >>> torch.equal(UtteranceLogProbs(model)(emb)[:, 0], model(wavs, torch.ones(2))[0].log_softmax(-1))  # the same calls
    True
    """

    def __init__(self, model: UtteranceClassifier):
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.model.classify(embeddings.squeeze(1)).float(), dim=-1).unsqueeze(1)
