"""transformers text models: BERT, RoBERTa (bidirectional) and GPT-NeoX / Pythia (causal).

How each passes padding to attention (transformers 5.x):

- BERT / RoBERTa: ``create_bidirectional_mask`` (or ``create_causal_mask`` when
  ``config.is_decoder``) from the 2D ``attention_mask``: ``None`` / 4D bool /
  4D additive / 2D, passed to ``layer.attention.self``. Only ``.self`` (Q, K, V
  and the attention product) is replaced; ``attention.output`` (dense, dropout,
  residual LayerNorm) is kept.
- GPT-NeoX: ``create_causal_mask`` gives ``None`` (SDPA, no padding) or a 4D
  causal mask including padding; the whole ``layer.attention`` (fused
  ``query_key_value`` and ``dense``) is replaced, the parallel residual
  ``x + mixer(ln1 x) + mlp(ln2 x)`` stays in the untouched layer code.
  Instead of a KV cache each layer keeps its mixer's recurrent state in the
  model's ``Cache`` (``convert/state_cache.py``): ``generate(..., use_cache=True)``
  runs the prompt once, then one recurrent step per new token.
  ``config.use_cache`` is False (plain forward calls build no cache) and
  ``generation_config.use_cache`` True.
"""

from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from speechbrain_cald.convert.families.base import Family, Projection, get_path
from speechbrain_cald.convert.families.projections import named_linears, split_head_interleaved
from speechbrain_cald.convert.wrappers import CausalLMAttentionWrapper, HFAttentionWrapper

__all__ = ["BERT", "ROBERTA", "GPT_NEOX"]


def _config(model: nn.Module):
    return getattr(model, "config")


def _bert_dims(attention: nn.Module):
    return attention.query.in_features, attention.num_attention_heads


def _bert_max_positions(model: nn.Module) -> Optional[int]:
    return int(_config(model).max_position_embeddings)


def _roberta_max_positions(model: nn.Module) -> Optional[int]:
    # RoBERTa numbers positions from padding_idx + 1
    config = _config(model)
    return int(config.max_position_embeddings - config.pad_token_id - 1)


def _is_decoder(model: nn.Module) -> bool:
    return bool(getattr(_config(model), "is_decoder", False))


def _neox_dims(attention: nn.Module):
    return attention.query_key_value.in_features, attention.config.num_attention_heads


def _neox_projections(attention: nn.Module) -> Dict[str, Projection]:
    qkv = attention.query_key_value
    q, k, v = split_head_interleaved(qkv.weight, qkv.bias, attention.config.num_attention_heads)
    return {"q": q, "k": k, "v": v, "o": Projection(attention.dense.weight, attention.dense.bias)}


def _neox_max_positions(model: nn.Module) -> Optional[int]:
    return int(_config(model).max_position_embeddings)


def _recurrent_generation(student: nn.Module) -> None:
    # Each wrapper learns its layer index: with a cache (generate(..., use_cache=True)) it keeps
    # its mixer's recurrent state in that slot of the model's Cache (convert/state_cache.py).
    for index, layer in enumerate(GPT_NEOX.layers(student)):
        wrapper = get_path(layer, GPT_NEOX.attention_path(layer))
        wrapper.layer_idx = index
    # plain forward calls (training, scoring) build no cache; generate uses the states
    _config(student).use_cache = False
    generation_config = getattr(student, "generation_config", None)
    if generation_config is not None:
        generation_config.use_cache = True


def _always_causal(model: nn.Module) -> bool:
    return True


_BERT_QKV = named_linears(("query", "key", "value", None))

BERT = Family(
    name="bert",
    description="transformers BERT (Model, ForSequenceClassification, ForMaskedLM, ...): "
    "encoder.layer[i].attention.self; mask None / 4D bool / 4D additive / 2D",
    encoder_classes=("BertEncoder",),
    layers_attr="layer",
    attention_paths=("attention.self",),
    wrapper=HFAttentionWrapper,
    projections=_BERT_QKV,
    dims=_bert_dims,
    max_positions_fn=_bert_max_positions,
    is_causal_fn=_is_decoder,
)

ROBERTA = Family(
    name="roberta",
    description="transformers RoBERTa (Model, ForSequenceClassification, ForMaskedLM, ...): "
    "encoder.layer[i].attention.self; masks as BERT",
    encoder_classes=("RobertaEncoder",),
    layers_attr="layer",
    attention_paths=("attention.self",),
    wrapper=HFAttentionWrapper,
    projections=_BERT_QKV,
    dims=_bert_dims,
    max_positions_fn=_roberta_max_positions,
    is_causal_fn=_is_decoder,
)

GPT_NEOX = Family(
    name="gpt_neox",
    description="transformers GPT-NeoX / Pythia (Model, ForCausalLM, ...): layers[i].attention; "
    "causal 4D mask or None; causal mixers only (mamba, mamba2)",
    encoder_classes=("GPTNeoXModel",),
    layers_attr="layers",
    attention_paths=("attention",),
    wrapper=CausalLMAttentionWrapper,
    projections=_neox_projections,
    dims=_neox_dims,
    max_positions_fn=_neox_max_positions,
    is_causal_fn=_always_causal,
    causal_required=True,
    post_convert=_recurrent_generation,
)
