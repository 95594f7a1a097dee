"""Tiny teachers of every supported family, each saved to disk and loaded back.

A ``Case`` knows how to build its teacher (random tiny config -> save -> load
from the directory), how to make a right-padded batch and the same sequences
one by one, and how to read the per-frame output. Tests ask for the fixture
``case`` (every case) or ``invariant_case`` (cases whose padded batch must equal
the sequences run alone); ``pytest_generate_tests`` parametrises them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import pytest
import torch

from speechbrain_cald.convert import load_teacher, save_speechbrain_model

MAMBA2_TINY = dict(d_state=8, expand=1, headdim=8, chunk_size=4)
MAMBA_TINY = dict(d_state=4, expand=1, chunk_size=4)
LINFORMER_TINY = dict(k=8)

W2V_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_stride=(5, 4),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=2,
    feat_extract_norm="layer",
    vocab_size=12,
)
TEXT_COMMON = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=60
)
SPEECH_LENGTHS = [800, 520, 300]  # samples -> 38, 24, 13 frames
TEXT_LENGTHS = [9, 6, 3]


@dataclass
class Case:
    name: str
    build: Callable  # (directory) -> teacher directory written
    mixer: str
    options: Dict
    kind: str  # "hf_audio" | "hf_text" | "sb"
    model_class: Optional[str] = None
    invariant: bool = True
    attn_implementation: Optional[str] = None
    extra: Dict = field(default_factory=dict)

    def load(self, directory):
        kwargs = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        if self.kind == "sb":
            return load_teacher(directory)
        return load_teacher(directory, model_class=self.model_class, **kwargs)

    def lengths(self) -> List[int]:
        return TEXT_LENGTHS if self.kind == "hf_text" else (SPEECH_LENGTHS if self.kind == "hf_audio" else [12, 7, 4])

    def make_batch(self, seed: int = 0):
        """(batch inputs, [inputs of each sequence alone], input lengths (B,))."""
        g = torch.Generator().manual_seed(seed)
        lengths = self.lengths()
        T, B = max(lengths), len(lengths)
        valid = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        if self.kind == "whisper":
            feats = torch.randn(2, 8, 32, generator=g)  # (B, num_mel_bins, 2 * max_source_positions)
            batch = {"input_features": feats, "decoder_input_ids": torch.tensor([[1, 2, 3], [1, 4, 5]])}
            return batch, [], torch.tensor([32, 32])
        if self.kind == "hf_audio":
            x = torch.randn(B, T, generator=g) * valid
            batch = {"input_values": x, "attention_mask": valid.long()}
            alone = [{"input_values": x[i : i + 1, :n]} for i, n in enumerate(lengths)]
        elif self.kind == "hf_text":
            ids = torch.randint(3, 60, (B, T), generator=g) * valid  # 0 = pad
            batch = {"input_ids": ids, "attention_mask": valid.long()}
            alone = [{"input_ids": ids[i : i + 1, :n]} for i, n in enumerate(lengths)]
        else:
            x = torch.randn(B, T, 20, generator=g) * valid[..., None]
            batch = {"src": x, "wav_len": torch.tensor(lengths, dtype=torch.float) / T}
            alone = [{"src": x[i : i + 1, :n], "wav_len": torch.ones(1)} for i, n in enumerate(lengths)]
        return batch, alone, torch.tensor(lengths)

    def run(self, model, inputs) -> torch.Tensor:
        """Per-frame output ``(B, T, D)`` (or per-utterance ``(B, C)``)."""
        if self.kind == "sb":
            return model.encode(inputs["src"], inputs["wav_len"])
        return model(**inputs)[0]


def _hf(config_cls: str, model_cls: str, **config):
    def build(directory):
        import transformers

        torch.manual_seed(0)
        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))
        model.save_pretrained(directory)
        return directory

    return build


def _sb(**kwargs):
    def build(directory):
        from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

        hparams = dict(
            tgt_vocab=10, input_size=20, d_model=32, nhead=2, num_encoder_layers=2,
            num_decoder_layers=1, d_ffn=64, causal=False, normalize_before=True, **kwargs,
        )
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformerASR(**hparams)
        save_speechbrain_model(model, directory, hparams)
        return directory

    return build


CASES = [
    Case("wav2vec2_ctc-bimamba2", _hf("Wav2Vec2Config", "Wav2Vec2ForCTC", **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("wav2vec2_ctc_eager-bimamba2", _hf("Wav2Vec2Config", "Wav2Vec2ForCTC", **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio", attn_implementation="eager"),
    Case("wav2vec2_stable_cls-bimamba2", _hf("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", do_stable_layer_norm=True, num_labels=3, **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("wav2vec2_base-linformer", _hf("Wav2Vec2Config", "Wav2Vec2Model", **W2V_COMMON), "linformer", dict(LINFORMER_TINY, max_len=64), "hf_audio"),
    # GroupNorm feature encoder (the transformers default, wav2vec2-base style): the teacher is
    # not padding-invariant, the student is (convert/padding_exact.py)
    Case("wav2vec2_groupnorm_ctc-bimamba2", _hf("Wav2Vec2Config", "Wav2Vec2ForCTC", **dict(W2V_COMMON, feat_extract_norm="group")), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("wavlm_groupnorm-bimamba2", _hf("WavLMConfig", "WavLMModel", num_buckets=16, max_bucket_distance=32, **dict(W2V_COMMON, feat_extract_norm="group")), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("hubert_ctc-bimamba2", _hf("HubertConfig", "HubertForCTC", **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("hubert_cls-bimamba2", _hf("HubertConfig", "HubertForSequenceClassification", num_labels=3, **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("wavlm_ctc-bimamba2", _hf("WavLMConfig", "WavLMForCTC", num_buckets=16, max_bucket_distance=32, **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("w2v2_conformer_ctc-bimamba2", _hf("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForCTC", conv_depthwise_kernel_size=5, position_embeddings_type="relative", **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("w2v2_conformer_rotary_cls-bimamba2", _hf("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForSequenceClassification", conv_depthwise_kernel_size=5, position_embeddings_type="rotary", num_labels=3, **W2V_COMMON), "bimamba2", MAMBA2_TINY, "hf_audio"),
    Case("bert-bimamba2", _hf("BertConfig", "BertModel", **TEXT_COMMON), "bimamba2", MAMBA2_TINY, "hf_text"),
    Case("bert_eager_cls-linformer", _hf("BertConfig", "BertForSequenceClassification", num_labels=2, **TEXT_COMMON), "linformer", LINFORMER_TINY, "hf_text", attn_implementation="eager"),
    Case("roberta-linformer_kv", _hf("RobertaConfig", "RobertaModel", pad_token_id=1, **TEXT_COMMON), "linformer", dict(LINFORMER_TINY, share="kv"), "hf_text"),
    Case("roberta_mlm-linformer_layer", _hf("RobertaConfig", "RobertaForMaskedLM", pad_token_id=1, **TEXT_COMMON), "linformer", dict(LINFORMER_TINY, share="layer"), "hf_text"),
    Case("roberta-bimamba2", _hf("RobertaConfig", "RobertaModel", pad_token_id=1, **TEXT_COMMON), "bimamba2", MAMBA2_TINY, "hf_text"),
    Case("gpt_neox_lm-mamba2", _hf("GPTNeoXConfig", "GPTNeoXForCausalLM", **TEXT_COMMON), "mamba2", MAMBA2_TINY, "hf_text"),
    Case("gpt_neox_lm-mamba", _hf("GPTNeoXConfig", "GPTNeoXForCausalLM", use_parallel_residual=False, **TEXT_COMMON), "mamba", MAMBA_TINY, "hf_text"),
    Case("sb_transformer-bimamba2", _sb(encoder_module="transformer", attention_type="regularMHA"), "bimamba2", MAMBA2_TINY, "sb"),
    Case("sb_conformer-bimamba2", _sb(encoder_module="conformer", attention_type="RelPosMHAXL", kernel_size=3), "bimamba2", MAMBA2_TINY, "sb"),
    Case("sb_conformer_mha-linformer", _sb(encoder_module="conformer", attention_type="regularMHA", kernel_size=3), "linformer", dict(LINFORMER_TINY, max_len=32), "sb"),
]
# Whisper takes fixed-length (padded by design) input and passes no mask: no padding case
WHISPER = Case(
    "whisper-bimamba2",
    _hf("WhisperConfig", "WhisperForConditionalGeneration", d_model=32, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        num_mel_bins=8, max_source_positions=16, max_target_positions=16, vocab_size=60,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
    "bimamba2", MAMBA2_TINY, "whisper", invariant=False,
)
ALL_CASES = CASES + [WHISPER]
BY_NAME = {c.name: c for c in ALL_CASES}


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
    if "invariant_case" in metafunc.fixturenames:
        cases = [c for c in ALL_CASES if c.invariant]
        metafunc.parametrize("invariant_case", cases, ids=[c.name for c in cases])


@pytest.fixture(scope="session")
def teacher_dirs(tmp_path_factory):
    """case name -> directory of its saved tiny teacher (built once per session)."""
    cache: Dict[str, str] = {}

    def get(case: Case):
        if case.name not in cache:
            cache[case.name] = str(case.build(tmp_path_factory.mktemp(case.name.replace("-", "_"))))
        return cache[case.name]

    return get


@pytest.fixture(scope="session")
def cases():
    """case name -> Case."""
    return BY_NAME
