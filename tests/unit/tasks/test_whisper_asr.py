"""The Whisper task's pieces: the decoder's loss skips the prompt and the padding; the logits KD reads token lengths."""

import torch
from float_tolerance import REDUCTION, assert_close

from speechbrain_cald.distill import ModelOutput
from speechbrain_cald.distill.objectives import DistillObjective
from speechbrain_cald.tasks.whisper_asr import decoder_objective


def test_decoder_objective_is_the_mean_cross_entropy_of_text_tokens_only():
    torch.manual_seed(0)
    tokens = torch.tensor([[1, 2, 7, 8, 9, 0], [1, 2, 5, 0, 0, 0]])  # prompt [1, 2], then text + eot, then padding
    lengths = torch.tensor([5, 3])
    logits = torch.randn(2, 5, 12)
    got = decoder_objective(logits, tokens, lengths, prompt_len=2)
    ce = torch.nn.functional.cross_entropy
    # predictions of positions 2..length-1 (inputs 1..length-2): [7, 8, 9] and [5]
    expected = (ce(logits[0, 1:4], tokens[0, 2:5], reduction="sum") + ce(logits[1, 1:2], tokens[1, 2:3], reduction="sum")) / 4
    assert_close(got, expected, factor=REDUCTION)
    # what lies beyond the lengths does not count
    logits2 = logits.clone()
    logits2[1, 2:] = 100.0
    assert torch.equal(decoder_objective(logits2, tokens, lengths, 2), got)


def test_logits_mask_uses_token_lengths_when_given():
    out = ModelOutput(torch.zeros(2, 4, 3), None, logits_lengths=torch.tensor([4, 2]))
    assert DistillObjective.logits_mask(out).tolist() == [[True] * 4, [True, True, False, False]]
    frames = ModelOutput(torch.zeros(2, 4, 3), torch.tensor([3, 1]))
    assert DistillObjective.logits_mask(frames).tolist() == [[True, True, True, False], [True, False, False, False]]
