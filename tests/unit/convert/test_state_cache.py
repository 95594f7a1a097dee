"""Generation with a recurrent state: a converted GPT-NeoX student continues from its cache.

The reference is a full recompute: the whole sequence so far through the model
without any cache, at every step. Greedy decoding with the state must pick the
same token at every step, with logits equal to fp32 round-off.
"""

import pytest
import torch
from transformers import DynamicCache, GPTNeoXConfig, GPTNeoXForCausalLM

from speechbrain_cald.convert import load_student, save_student, to_linear_time
from speechbrain_cald.convert.state_cache import MixerStateLayer, state_nbytes
from float_tolerance import NETWORK, assert_close

MIXERS = {
    "mamba": dict(d_state=8, chunk_size=4),
    "mamba2": dict(d_state=8, expand=1, headdim=8, chunk_size=4),
}


def _student(mixer: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    return to_linear_time(GPTNeoXForCausalLM(cfg), mixer, **MIXERS[mixer]).eval()


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_greedy_steps_with_state_equal_a_full_recompute(mixer):
    student = _student(mixer)
    prompt = torch.randint(0, 64, (2, 37))  # longer than a chunk; two sequences
    cache = DynamicCache()
    with torch.no_grad():
        out = student(prompt, cache=cache, use_cache=True)
        seq = prompt
        for step in range(8):
            full = student(seq).logits[:, -1]  # no cache: the reference
            # recurrent steps vs one chunked pass through every layer: the same sums in another order
            assert_close(out.logits[:, -1], full, factor=NETWORK, msg=f"step {step}")
            token = full.argmax(-1, keepdim=True)
            assert torch.equal(out.logits[:, -1].argmax(-1, keepdim=True), token), f"step {step}"
            seq = torch.cat([seq, token], 1)
            out = student(token, cache=out.cache, use_cache=True)
    assert all(isinstance(layer, MixerStateLayer) for layer in cache.layers)
    assert cache.get_seq_length() == seq.shape[1]


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_generate_with_cache_equals_without(mixer):
    student = _student(mixer, seed=1)
    prompt = torch.randint(0, 64, (2, 21))
    with torch.no_grad():
        kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
        assert torch.equal(student.generate(prompt, use_cache=True, **kwargs), student.generate(prompt, use_cache=False, **kwargs))
        # default generation uses the state
        assert student.generation_config.use_cache is True
        # beam search reorders the states like a KV cache
        beams = dict(kwargs, num_beams=3, num_return_sequences=2)
        assert torch.equal(student.generate(prompt, use_cache=True, **beams), student.generate(prompt, use_cache=False, **beams))


def test_state_size_does_not_grow_with_the_prompt():
    student = _student("mamba")
    sizes = {}
    with torch.no_grad():
        for length in (5, 300):
            cache = DynamicCache()
            student(torch.randint(0, 64, (1, length)), cache=cache, use_cache=True)
            sizes[length] = sum(state_nbytes(layer.state) for layer in cache.layers)
    assert sizes[5] == sizes[300] > 0


def test_saved_student_generates_with_state(tmp_path):
    student = _student("mamba", seed=2)
    save_student(student, tmp_path / "student")
    again = load_student(tmp_path / "student").eval()
    prompt = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        ref = student.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
        assert torch.equal(again.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True), ref)


def test_misuse_is_a_clear_error():
    student = _student("mamba")
    prompt = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        out = student(prompt, cache=DynamicCache(), use_cache=True)
        with pytest.raises(ValueError, match="seen 6 tokens but position_ids start at 0"):
            student(prompt, cache=out.cache, use_cache=True, position_ids=torch.arange(6)[None])
        with pytest.raises(RuntimeError, match="cannot be rolled back"):
            out.cache.crop(3)
        # a KV cache filled by a transformer cannot be continued by the student
        torch.manual_seed(0)
        teacher = GPTNeoXForCausalLM(student.config)
        kv = teacher(prompt, use_cache=True).cache
        with pytest.raises(ValueError, match="already holds 6 tokens of keys and values"):
            student(prompt[:, -1:], cache=kv, use_cache=True)
