"""A byte-level BPE tokenizer trained on local text, in the GPT-NeoX style.

For models trained from scratch (the mini LM recipe) and for tests: the
``tokenizers`` library learns the merges offline and the result is saved as a
transformers ``PreTrainedTokenizerFast`` folder, loadable with
``AutoTokenizer.from_pretrained(folder)`` like a Pythia checkpoint's own.
Special token: ``<|endoftext|>`` (id 0), used as EOS, BOS and padding, as in
GPT-NeoX.
"""

from __future__ import annotations

import os
from typing import Iterable

__all__ = ["EOT", "train_bpe_tokenizer"]

EOT = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str, min_frequency: int = 2):
    """Learn a byte-level BPE on ``texts`` and save it to ``out_dir``.

    Arguments
    ---------
    texts : iterable of str
        Training documents (streamed).
    vocab_size : int
        Vocabulary size including the 256 byte symbols and ``<|endoftext|>``.
    out_dir : str
        Folder for ``tokenizer.json`` and ``tokenizer_config.json``.
    min_frequency : int
        Pairs seen fewer times are not merged.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        The saved tokenizer.

    Example
    -------
    >>> import tempfile
    >>> tok = train_bpe_tokenizer(["the cat sat on the mat"] * 20, 300, tempfile.mkdtemp())
    >>> tok.decode(tok("the cat")["input_ids"]), tok.eos_token_id
    ('the cat', 0)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 258:
        raise ValueError(f"train_bpe_tokenizer: vocab_size must be >= 258 (256 bytes + {EOT} + 1), found {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOT, bos_token=EOT, pad_token=EOT, unk_token=EOT)
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast
