"""Recovering lengths from every mask form transformers hands to attention."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from speechbrain_cald.convert.masks import lengths_from_attention_mask, lengths_from_valid

LENGTHS = [5, 3, 1]


def _padding(lengths, T):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flash_attention_2"])
@pytest.mark.parametrize("builder", ["bidirectional", "causal"])
def test_lengths_from_masks_built_by_transformers(impl, builder):
    """Masks made by transformers' own builders, for each attention implementation."""
    config = BertConfig(hidden_size=8, num_attention_heads=2)
    config._attn_implementation = impl
    embeds = torch.zeros(3, 5, 8)
    padding = _padding(LENGTHS, 5)
    if builder == "bidirectional":
        mask = create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=padding)
    else:
        mask = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=padding, cache=None,
                                  position_ids=torch.arange(5)[None])
    assert lengths_from_attention_mask(mask, 5).tolist() == LENGTHS
    # and an unpadded batch gives None (the mixers' unmasked path)
    full = torch.ones(3, 5, dtype=torch.long)
    if builder == "bidirectional":
        mask = create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=full)
    else:
        mask = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=full, cache=None,
                                  position_ids=torch.arange(5)[None])
    assert lengths_from_attention_mask(mask, 5) is None


def test_legacy_additive_mask():
    valid = _padding(LENGTHS, 5).bool()
    mask = (~valid)[:, None, None, :].float() * -10000.0
    assert lengths_from_attention_mask(mask.expand(3, 1, 5, 5), 5).tolist() == LENGTHS


@pytest.mark.parametrize("valid", [[[0, 1, 1]], [[1, 0, 1]]], ids=["left-padding", "hole"])
def test_non_prefix_masks_are_errors(valid):
    with pytest.raises(ValueError, match="right-padded"):
        lengths_from_valid(torch.tensor(valid).bool())


def test_wrong_sizes_and_types_are_errors():
    with pytest.raises(ValueError, match="expected 4 key positions"):
        lengths_from_attention_mask(torch.ones(2, 3), 4)
    with pytest.raises(ValueError, match="found shape"):
        lengths_from_attention_mask(torch.ones(2, 3, 3), 3)
    with pytest.raises(TypeError, match="BlockMask"):
        lengths_from_attention_mask(object(), 3)
