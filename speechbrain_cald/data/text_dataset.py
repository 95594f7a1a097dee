"""Tokenised text-classification datasets and their padded batches.

``TokenizedText(rows, tokenizer, labels, max_length)`` tokenises a manifest's
rows once (a fast transformers tokenizer, batched), keeps each example's full
token count and truncates to ``max_length`` tokens (the model's position limit
or the YAML's), counting how many examples lost tokens: what a report says
about truncation. ``max_length=None`` keeps every token (full-length
evaluation of a linear-time student).

``LengthGroupedSampler(lengths, batch_size, seed)`` orders an epoch so that
each run of ``batch_size`` indices holds examples of similar length
(transformers' ``get_length_grouped_indices``: a seeded permutation, sorted by
length within mega-batches of up to 50 batches), the batches then in a seeded
random order (as SpeechBrain's and ESPnet's bucketing samplers do), a new order
each epoch (``set_epoch``) and the same one again for a resumed epoch: less
padding, and no long-to-short drift across each mega-batch.

``TextBatch`` is a right-padded batch (``input_ids (B, T)``, ``attention_mask
(B, T)``, optional ``token_type_ids``, ``labels (B,)``, ``lengths (B,)`` in
tokens, ``ids``), built by ``collate_text(pad_id)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["LengthGroupedSampler", "TextBatch", "TokenizedText", "collate_text", "label_ids"]

_CHUNK = 1024  # rows per tokenizer call


def label_ids(rows: Sequence[Mapping[str, str]], labels: Optional[Sequence[str]], where: str = "manifest") -> List:
    """Class ids in ``labels``' order (or float scores when ``labels`` is None).

    Example
    -------
    >>> label_ids([{"label": "pos"}, {"label": "neg"}], ["neg", "pos"])
    [1, 0]
    >>> label_ids([{"label": "3.8"}], None)
    [3.8]
    """
    if labels is None:
        return [float(r["label"]) for r in rows]
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for i, r in enumerate(rows):
        if r["label"] not in index:
            raise ValueError(f"{where}, row {i + 2} (ID {r.get('ID')}): label '{r['label']}' is not one of {list(labels)}")
        out.append(index[r["label"]])
    return out


class TokenizedText(Dataset):
    """Examples ``{id, input_ids, token_type_ids, label}`` of a text manifest.

    Arguments
    ---------
    rows : sequence of mapping
        Manifest rows (``ID, text_a, text_b, label``).
    tokenizer : transformers tokenizer
        From the pretrained folder; sentence pairs as its model expects them.
    labels : sequence of str or None
        The class names in id order; None for a regression score.
    max_length : int or None
        Tokens kept per example (special tokens included); None keeps all.
    where : str
        Where the rows come from, for messages.

    Attributes
    ----------
    full_lengths : list of int
        Tokens of each example before truncation.
    truncated : int
        Examples longer than ``max_length``.
    """

    def __init__(self, rows, tokenizer, labels, max_length: Optional[int] = None, where: str = "manifest"):
        self.ids = [r["ID"] for r in rows]
        self.labels = label_ids(rows, labels, where)
        self.max_length = max_length
        pairs = any(r.get("text_b") for r in rows)
        self.input_ids: List[List[int]] = []
        self.token_type_ids: List[Optional[List[int]]] = []
        self.full_lengths: List[int] = []
        self.truncated = 0
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            a = [r["text_a"] for r in chunk]
            b = [r.get("text_b", "") for r in chunk] if pairs else None
            full = _encode(tokenizer, a, b, None)
            self.full_lengths += [len(ids) for ids in full["input_ids"]]
            long = [i for i, ids in enumerate(full["input_ids"]) if max_length is not None and len(ids) > max_length]
            if long:
                cut = _encode(tokenizer, [a[i] for i in long], [b[i] for i in long] if b else None, max_length)
                for j, i in enumerate(long):
                    for key in full:
                        full[key][i] = cut[key][j]
            self.truncated += len(long)
            self.input_ids += full["input_ids"]
            self.token_type_ids += full.get("token_type_ids", [None] * len(chunk))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Dict:
        return dict(id=self.ids[i], input_ids=self.input_ids[i], token_type_ids=self.token_type_ids[i], label=self.labels[i])

    def lengths(self) -> List[int]:
        """Tokens per example as batched (after truncation)."""
        return [len(x) for x in self.input_ids]


class LengthGroupedSampler(Sampler):
    """Example indices, batch-sized runs of similar length, in a seeded order per epoch.

    transformers' grouping sorts each mega-batch from long to short; the batches
    are then shuffled (a short last batch stays last, where the loader cuts it),
    so that a one-pass schedule does not meet the lengths in waves. Measured on
    mini/Text's tweets (the Linformer student, test accuracy): batches in the
    sorted order 72.10, shuffled batches of similar lengths 73.30, shuffled
    examples 73.45 (teacher 75.20; ``recipes/mini/Text/RESULTS.md``).

    Arguments
    ---------
    lengths : sequence of int
        Tokens per example (``TokenizedText.lengths()``).
    batch_size : int
        The loader's batch size.
    seed : int
        With the epoch (``set_epoch``), fixes the order.
    mega_batches : int, optional
        Batches sorted together (transformers' ``mega_batch_mult``); default:
        50, or fewer so that an epoch has at least 4 mega-batches.

    Example
    -------
    >>> lengths = torch.randint(5, 100, (400,), generator=torch.Generator().manual_seed(0)).tolist()
    >>> sampler = LengthGroupedSampler(lengths, batch_size=8, seed=0)
    >>> order = list(sampler)
    >>> sorted(order) == list(range(400)), order == list(sampler)
    (True, True)
    >>> def padded(order):  # tokens in the padded batches
    ...     return sum(8 * max(lengths[i] for i in order[j:j + 8]) for j in range(0, 400, 8))
    >>> padded(order) < 1.1 * sum(lengths) < padded(range(400))
    True
    >>> sampler.set_epoch(1); list(sampler) != order
    True
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batches: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"LengthGroupedSampler: batch_size must be >= 1, found {batch_size}")
        if mega_batches is not None and mega_batches < 1:
            raise ValueError(f"LengthGroupedSampler: mega_batches must be >= 1, found {mega_batches}")
        self.mega_batches = mega_batches
        self.lengths = [int(n) for n in lengths]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The order of epoch ``epoch`` (the same on a resumed run)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        grouped = get_length_grouped_indices(
            self.lengths, self.batch_size, mega_batch_mult=self.mega_batches, generator=generator
        )
        # the batches in a random order: within a mega-batch they run from long to short,
        # a drift a one-pass schedule follows; a short last batch stays last (the
        # loader cuts the indices into consecutive runs of batch_size)
        batches = [grouped[i : i + self.batch_size] for i in range(0, len(grouped), self.batch_size)]
        full = len(self.lengths) // self.batch_size
        order = torch.randperm(full, generator=generator).tolist() + list(range(full, len(batches)))
        return iter([i for b in order for i in batches[b]])


def _encode(tokenizer, a, b, max_length):
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "longer than the model's maximum": we know, and count it
    try:
        kwargs = dict(truncation=True, max_length=max_length) if max_length is not None else dict(truncation=False)
        out = tokenizer(a, b, **kwargs) if b is not None else tokenizer(a, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return {k: list(v) for k, v in out.items() if k in ("input_ids", "token_type_ids")}


@dataclasses.dataclass
class TextBatch:
    """A right-padded batch of tokenised examples.

    Attributes
    ----------
    input_ids, attention_mask : torch.Tensor
        ``(B, T)``; the mask is 1 on tokens, 0 on padding.
    token_type_ids : torch.Tensor or None
        ``(B, T)`` segment ids when the tokenizer gives them (BERT), else None.
    labels : torch.Tensor
        ``(B,)`` class ids (long) or scores (float).
    lengths : torch.Tensor
        ``(B,)`` tokens per example.
    ids : list of str
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: Optional[torch.Tensor]
    labels: torch.Tensor
    lengths: torch.Tensor
    ids: List[str]

    def to(self, device) -> "TextBatch":
        move = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in move.items():
            if isinstance(value, torch.Tensor):
                move[key] = value.to(device)
        return TextBatch(**move)

    def model_inputs(self) -> Dict[str, torch.Tensor]:
        """Keyword arguments of a transformers model call."""
        inputs = dict(input_ids=self.input_ids, attention_mask=self.attention_mask)
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs


def _collate(examples: Sequence[Dict], pad_id: int) -> TextBatch:
    lengths = torch.tensor([len(e["input_ids"]) for e in examples], dtype=torch.long)
    B, T = len(examples), int(lengths.max())
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    types = None if examples[0]["token_type_ids"] is None else torch.zeros(B, T, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
        if types is not None:
            types[i, :n] = torch.tensor(e["token_type_ids"])
    first = examples[0]["label"]
    labels = torch.tensor([e["label"] for e in examples], dtype=torch.float32 if isinstance(first, float) else torch.long)
    return TextBatch(input_ids, mask, types, labels, lengths, [e["id"] for e in examples])


def collate_text(pad_id: int):
    """A DataLoader ``collate_fn`` padding with ``pad_id`` (the tokenizer's pad token).

    Example
    -------
    >>> batch = collate_text(1)([dict(id="a", input_ids=[5, 6, 7], token_type_ids=None, label=0),
    ...                          dict(id="b", input_ids=[5], token_type_ids=None, label=1)])
    >>> batch.input_ids.tolist(), batch.attention_mask.tolist(), batch.lengths.tolist()
    ([[5, 6, 7], [5, 1, 1]], [[1, 1, 1], [1, 0, 0]], [3, 1])
    """
    return functools.partial(_collate, pad_id=pad_id)
