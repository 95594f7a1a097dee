"""wav2vec2-family speech encoders from a local folder, with a CTC head.

:class:`HFSpeechEncoder` wraps a transformers base model (wav2vec2, HuBERT,
WavLM, Wav2Vec2-Conformer) loaded from a local directory saved with
``save_pretrained`` (through the offline rule, ``pretrained.local_source``) or
built from a config dict (an exported inference folder: the weights come from
its checkpoint). It runs on SpeechBrain's ``(wavs, wav_lens)`` and returns the
frame outputs with their absolute frame counts, so every head plugs onto the
same encoder: :class:`CTCModel` (ASR) here, a pooled classifier for utterance
tasks.

What it does the wav2vec2 way, read from the checkpoint rather than assumed:

- every size comes from the model's config (``hidden_size``, layers, heads);
- the waveform is normalised to zero mean and unit variance per utterance
  (over its valid samples only, as ``Wav2Vec2FeatureExtractor`` does) when the
  folder's ``preprocessor_config.json`` says ``do_normalize`` (default: yes);
- the CNN feature encoder is frozen (``freeze_feature_encoder``), as in
  wav2vec2's CTC fine-tuning;
- SpecAugment-style masking of time steps / feature channels is the model's
  own (``mask_time_prob`` ... in the config, active in training mode only);
  ``config_overrides`` sets these where the config has them and refuses keys
  it does not have.

Padding: the sample-level ``attention_mask`` is always passed, so attention
(or the linear-time mixer of a converted student, which reads its lengths
from that mask) never sees padded frames, whatever the feature encoder's
normalisation type.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from speechbrain_cald.convert.families.hf_speech import feature_encoder_lengths
from speechbrain_cald.convert.io import load_pretrained
from speechbrain_cald.convert.padding_exact import install_conv_padding_hooks, install_feature_encoder_padding_hooks
from speechbrain_cald.pretrained import local_source

__all__ = ["CTCModel", "CTCLogProbs", "HFSpeechEncoder", "normalize_waveforms", "sample_mask"]

# base-model classes this wrapper knows how to run (config.model_type)
SUPPORTED_TYPES = ("wav2vec2", "hubert", "wavlm", "wav2vec2-conformer", "data2vec-audio", "unispeech", "unispeech-sat", "sew")
SPEECH_ENCODERS = f"a wav2vec2-family speech encoder ({', '.join(SUPPORTED_TYPES)})"


def sample_mask(wav_lens: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``(B, N)`` bool mask of valid samples from SpeechBrain's relative lengths ``(B,)``.

    Example
    -------
    >>> sample_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    valid = torch.round(wav_lens.float() * n_samples).long()
    return torch.arange(n_samples, device=wav_lens.device)[None, :] < valid[:, None]


def normalize_waveforms(wavs: torch.Tensor, mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding set to 0.

    The computation of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``
    (population variance, ``eps`` inside the square root), batched.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, N)`` waveforms.
    mask : torch.Tensor
        ``(B, N)`` True on valid samples.

    Returns
    -------
    torch.Tensor
        ``(B, N)``.

    Example
    -------
    >>> x = torch.tensor([[1.0, 3.0, 9.0]])
    >>> normalize_waveforms(x, torch.tensor([[True, True, False]])).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    m = mask.to(wavs.dtype)
    n = m.sum(1, keepdim=True).clamp_min(1)
    mean = (wavs * m).sum(1, keepdim=True) / n
    var = (((wavs - mean) * m) ** 2).sum(1, keepdim=True) / n
    return (wavs - mean) / torch.sqrt(var + eps) * m


def _read_preprocessor(folder: Optional[str]) -> Dict[str, Any]:
    if folder is None:
        return {}
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class HFSpeechEncoder(nn.Module):
    """A wav2vec2-family base model run on ``(wavs, wav_lens)``.

    Arguments
    ---------
    source : str, optional
        Local folder holding ``config.json`` and the weights (``save_pretrained``
        of a base model or of any head on it, e.g. ``Wav2Vec2ForCTC``; the head
        is dropped). Hub ids are refused.
    config : dict, optional
        Instead of ``source``: the model's config as a dict (``config.to_dict()``);
        the weights are random until a checkpoint is loaded (inference export).
    freeze_feature_encoder : bool
        Keep the CNN feature encoder fixed (wav2vec2 fine-tuning practice).
    normalize_waveform : bool, optional
        Per-utterance zero-mean unit-variance input; default: the folder's
        ``preprocessor_config.json`` ``do_normalize``, else True.
    sample_rate : int
        Expected input rate; checked against ``preprocessor_config.json``.
    config_overrides : dict, optional
        Config attributes to change before building (``mask_time_prob``,
        ``layerdrop``, dropouts...); a key the config lacks is an error.
    exact_padding : bool
        Make the valid frames' outputs independent of the padding in the
        batch, as converted students are (``convert/padding_exact.py``: the
        GroupNorm of ``feat_extract_norm="group"`` models and conformer
        convolutions take only valid frames); False keeps transformers' own
        padded computation.

    Example
    -------
    >>> from transformers import Wav2Vec2Config
    >>> cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    ...     conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
    ...     num_conv_pos_embedding_groups=2)
    >>> enc = HFSpeechEncoder(config=cfg.to_dict()).eval()
    >>> h, lengths = enc(torch.randn(2, 1600), torch.tensor([1.0, 0.5]))
    >>> h.shape, lengths.tolist(), enc.output_size
    (torch.Size([2, 78, 32]), [78, 38], 32)
    """

    def __init__(
        self,
        source: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        freeze_feature_encoder: bool = True,
        normalize_waveform: Optional[bool] = None,
        sample_rate: int = 16000,
        config_overrides: Optional[Mapping[str, Any]] = None,
        exact_padding: bool = True,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if (source is None) == (config is None):
            raise ValueError("HFSpeechEncoder: pass exactly one of `source` (a local folder) or `config` (a dict)")
        folder = str(local_source(source, "speech encoder")) if source is not None else None
        if folder is not None:
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
        else:
            config = dict(config)
            model_type = config.pop("model_type", None)
            if model_type is None:
                raise ValueError("HFSpeechEncoder: the config dict has no `model_type`")
            cfg = AutoConfig.for_model(model_type, **config)
        if cfg.model_type not in SUPPORTED_TYPES:
            raise ValueError(
                f"HFSpeechEncoder: '{source or 'config'}' is a '{cfg.model_type}' model; expected {SPEECH_ENCODERS}"
            )
        for key, value in (config_overrides or {}).items():
            if not hasattr(cfg, key):
                raise KeyError(
                    f"HFSpeechEncoder: config_overrides key '{key}' is not an attribute of {type(cfg).__name__} "
                    f"({source or 'config'}); e.g. mask_time_prob, mask_feature_prob, layerdrop, hidden_dropout"
                )
            setattr(cfg, key, value)
        if folder is not None:  # checked as convert checks a teacher: the weights must fit the config
            self.model = load_pretrained(folder, AutoModel, "speech encoder", "speech", SPEECH_ENCODERS, config=cfg)
        else:
            self.model = AutoModel.from_config(cfg)
        for needed in ("feature_extractor", "encoder", "_get_feat_extract_output_lengths"):
            if not hasattr(self.model, needed):
                raise TypeError(f"HFSpeechEncoder: {type(self.model).__name__} has no `{needed}` (not a wav2vec2-style model)")
        pre = _read_preprocessor(folder)
        if pre.get("sampling_rate", sample_rate) != sample_rate:
            raise ValueError(
                f"HFSpeechEncoder: {folder}/preprocessor_config.json says sampling_rate {pre['sampling_rate']}, "
                f"the recipe feeds {sample_rate} Hz audio"
            )
        self.normalize_waveform = bool(pre.get("do_normalize", True) if normalize_waveform is None else normalize_waveform)
        self.sample_rate = sample_rate
        self.output_size = int(cfg.hidden_size)
        if exact_padding:
            install_feature_encoder_padding_hooks(self.model)
            install_conv_padding_hooks(self.model.encoder.layers)
        if freeze_feature_encoder:
            for p in self.model.feature_extractor.parameters():
                p.requires_grad = False
            self.model.feature_extractor._requires_grad = False

    @property
    def config(self):
        """The transformers config (sizes, masking, dropouts)."""
        return self.model.config

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Frames out of the encoder for ``sample_lengths (B,)`` valid samples."""
        return feature_encoder_lengths(self.model, sample_lengths)

    def prepare(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(input_values, sample mask)``: padding zeroed, normalised when the model expects it."""
        if wavs.dim() == 3:  # (B, N, 1): SpeechBrain's channel-last mono
            wavs = wavs.squeeze(-1)
        if wavs.dim() != 2:
            raise ValueError(f"HFSpeechEncoder: wavs should be (B, N) mono waveforms, found {tuple(wavs.shape)}")
        mask = sample_mask(wav_lens.to(wavs.device), wavs.shape[1])
        wavs = normalize_waveforms(wavs, mask) if self.normalize_waveform else wavs * mask
        return wavs, mask

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, N)`` waveforms at ``sample_rate``, right-padded.
        wav_lens : torch.Tensor, optional
            ``(B,)`` relative lengths in [0, 1] (None: all full).

        Returns
        -------
        hidden : torch.Tensor
            ``(B, T, D)`` last-layer outputs, padded frames 0.
        lengths : torch.Tensor
            ``(B,)`` absolute valid frames.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        x, mask = self.prepare(wavs, wav_lens)
        hidden = self.model(x, attention_mask=mask.long()).last_hidden_state
        lengths = self.frame_lengths(mask.sum(1)).clamp(max=hidden.shape[1])
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden * valid.unsqueeze(-1).to(hidden.dtype), lengths

    def frontend(self, wavs: torch.Tensor) -> torch.Tensor:
        """What the transformer layers get for full-length ``wavs (B, N)``: CNN + feature projection ``(B, T, D)``."""
        x, _ = self.prepare(wavs, torch.ones(wavs.shape[0], device=wavs.device))
        feats = self.model.feature_extractor(x).transpose(1, 2)
        projected = self.model.feature_projection(feats)
        return projected[0] if isinstance(projected, tuple) else projected

    def layers_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The transformer (or converted) encoder stack on :meth:`frontend`'s output (speed benchmarks)."""
        return self.model.encoder(hidden).last_hidden_state


class CTCModel(nn.Module):
    """A speech encoder with a CTC head: ``(wavs, wav_lens) -> (logits (B, T, V), lengths (B,))``.

    Arguments
    ---------
    encoder : HFSpeechEncoder
        Any module returning ``(hidden (B, T, D), lengths)`` with ``output_size`` D.
    n_tokens : int
        CTC outputs (blank included).
    dropout : float, optional
        Dropout before the head (default: the encoder config's ``final_dropout``, else 0.1).

    Example
    -------
    >>> from transformers import HubertConfig
    >>> cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    ...     conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
    ...     num_conv_pos_embedding_groups=2)
    >>> model = CTCModel(HFSpeechEncoder(config=cfg.to_dict()), n_tokens=5).eval()
    >>> logits, lengths = model(torch.randn(1, 800))
    >>> logits.shape, lengths.tolist()
    (torch.Size([1, 38, 5]), [38])
    """

    def __init__(self, encoder: nn.Module, n_tokens: int, dropout: Optional[float] = None):
        super().__init__()
        self.encoder = encoder
        if dropout is None:
            dropout = getattr(getattr(encoder, "config", None), "final_dropout", 0.1)
        self.dropout = nn.Dropout(float(dropout))
        self.ctc_lin = nn.Linear(encoder.output_size, int(n_tokens))

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.encoder(wavs, wav_lens)
        return self.ctc_lin(self.dropout(hidden)), lengths


class CTCLogProbs(nn.Module):
    """``(wavs, wav_lens) -> (B, T, V)`` CTC log-probabilities: the ``encoder`` of an exported ``EncoderASR`` folder.

    Example
    -------
    >>> class Toy(nn.Module):
    ...     def forward(self, wavs, wav_lens=None):
    ...         return torch.zeros(wavs.shape[0], 3, 4), torch.full((wavs.shape[0],), 3)
    >>> CTCLogProbs(Toy())(torch.zeros(1, 10), torch.ones(1)).exp().sum(-1)
    tensor([[1., 1., 1.]])
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits, _ = self.model(wavs, wav_lens)
        return torch.log_softmax(logits.float(), dim=-1)
