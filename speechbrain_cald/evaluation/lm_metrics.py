"""Evaluating causal LMs: perplexity (two independent ways) and zero-shot tasks.

- :func:`perplexity_two_ways`: over blocks of a token shard, the mean
  next-token loss computed by this package (:func:`next_token_objective` on
  the logits) and by transformers itself (the model's own ``labels=`` loss),
  token-weighted; a disagreement beyond float round-off is an error, so a
  shifted or masked target cannot go unnoticed.
- :func:`lambada_accuracy`: LAMBADA-style last-word prediction from
  ``{"text": ...}`` lines: the last word (after the last space) is the target;
  correct when every target token is the model's greedy choice
  (lm-evaluation-harness's ``acc``), with the target's perplexity.
- :func:`multiple_choice_accuracy`: PIQA / HellaSwag-style items scored by
  log-likelihood: ``{"ctx": str, "endings" | "choices": [str], "label": int}``
  (``"goal"`` / ``"sol1"`` / ``"sol2"`` PIQA lines too); ``acc`` picks the
  ending with the highest summed log-probability, ``acc_norm`` divides it by
  the ending's length in bytes (the harness's normalisation).

Continuations are scored as the harness does: context and continuation are
tokenised separately (the continuation with its leading space), and the model
sees their concatenation.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from speechbrain_cald.data.text_corpus import CorpusFormatError, iter_json_objects
from speechbrain_cald.tasks.lm import next_token_objective

__all__ = [
    "PerplexityMismatch",
    "lambada_accuracy",
    "multiple_choice_accuracy",
    "perplexity_two_ways",
    "read_choice_items",
    "read_lambada_items",
]


class PerplexityMismatch(RuntimeError):
    """The two computations of the next-token loss disagree."""


@torch.no_grad()
def perplexity_two_ways(
    model: torch.nn.Module,
    blocks: torch.utils.data.Dataset,
    batch_size: int = 8,
    device: str = "cpu",
    rtol: float = 1e-4,
    progress: bool = False,
) -> Dict[str, float]:
    """Token-weighted next-token loss and perplexity, computed twice.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers causal LM (``model(input_ids, labels=...)`` returns
        ``loss`` and ``logits``).
    blocks : Dataset
        Items ``{"tokens": (T,) LongTensor}`` of one length
        (:class:`~speechbrain_cald.data.token_blocks.TokenBlocks`).
    batch_size : int
        Blocks per forward pass.
    device : str
        Where to run.
    rtol : float
        Largest relative difference allowed between the two losses (per batch
        and in total); fp32 round-off is ~1e-6.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``nll`` (ours), ``nll_transformers``, ``ppl``, ``tokens`` (predicted
        tokens), ``blocks``.

    Example
    -------
    >>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    >>> lm = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32)).eval()
    >>> blocks = [{"tokens": torch.randint(0, 20, (6,))} for _ in range(3)]
    >>> r = perplexity_two_ways(lm, blocks, batch_size=2)
    >>> r["tokens"], abs(r["nll"] - r["nll_transformers"]) < 1e-5
    (15, True)
    """
    from tqdm import tqdm

    model.eval().to(device)
    ours = theirs = 0.0
    count = 0
    starts = range(0, len(blocks), batch_size)
    for start in tqdm(starts, disable=not progress, desc="perplexity"):
        ids = torch.stack([blocks[i]["tokens"] for i in range(start, min(start + batch_size, len(blocks)))]).to(device)
        out = model(input_ids=ids, labels=ids, use_cache=False)
        mine = float(next_token_objective(out.logits, ids))
        hf = float(out.loss)
        if abs(mine - hf) > rtol * max(1.0, abs(hf)):
            raise PerplexityMismatch(
                f"blocks {start}..{start + ids.shape[0] - 1}: next-token loss {mine:.6f} (ours) vs "
                f"{hf:.6f} (transformers' labels= loss) differ beyond {rtol:g}: refusing to report"
            )
        n = ids.numel() - ids.shape[0]
        ours += mine * n
        theirs += hf * n
        count += n
    if count == 0:
        raise ValueError("perplexity_two_ways: no blocks to evaluate")
    nll, nll_hf = ours / count, theirs / count
    if abs(nll - nll_hf) > rtol * max(1.0, abs(nll_hf)):
        raise PerplexityMismatch(f"total next-token loss {nll:.6f} (ours) vs {nll_hf:.6f} (transformers) differ")
    return {"nll": nll, "nll_transformers": nll_hf, "ppl": math.exp(nll), "tokens": count, "blocks": len(blocks)}


# ------------------------------------------------------------------ task files
def read_lambada_items(path: str, limit: Optional[int] = None) -> List[Tuple[str, str]]:
    """``(context, " " + last word)`` per ``{"text": ...}`` line of a LAMBADA file.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "lambada.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"text": "the cat sat on the mat"}\\n')
    >>> read_lambada_items(p)
    [('the cat sat on the', ' mat')]
    """
    items = []
    for lineno, obj in iter_json_objects(path):
        text = obj.get("text")
        if not isinstance(text, str) or " " not in text.strip():
            raise CorpusFormatError(f"{path}:{lineno}: expected {{\"text\": \"... last_word\"}} with at least two words")
        context, word = text.strip().rsplit(" ", 1)
        items.append((context, " " + word))
        if limit is not None and len(items) >= limit:
            break
    return items


def read_choice_items(path: str, limit: Optional[int] = None) -> List[Tuple[str, List[str], int]]:
    """``(context, [continuations], label)`` per line of a multiple-choice file.

    Accepted lines: ``{"ctx", "endings" | "choices", "label"}`` (HellaSwag-style;
    ``label`` an int or a digit string) and PIQA's ``{"goal", "sol1", "sol2",
    "label"}``. Each continuation gets a leading space unless it has one.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "piqa.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}\\n')
    >>> read_choice_items(p)
    [('open a jar', [' twist the lid', ' eat the lid'], 0)]
    """
    items = []
    for lineno, obj in iter_json_objects(path):
        if "goal" in obj and "sol1" in obj:
            context, choices = obj["goal"], [obj[k] for k in ("sol1", "sol2", "sol3") if k in obj]
        else:
            context = obj.get("ctx")
            choices = obj.get("endings", obj.get("choices"))
        label = obj.get("label")
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        ok = (
            isinstance(context, str)
            and isinstance(choices, list)
            and len(choices) >= 2
            and all(isinstance(c, str) for c in choices)
            and isinstance(label, int)
            and 0 <= label < len(choices)
        )
        if not ok:
            raise CorpusFormatError(
                f"{path}:{lineno}: expected {{\"ctx\": str, \"endings\" or \"choices\": [str, ...], \"label\": int}} "
                f"(or PIQA's goal / sol1 / sol2 / label), found keys {sorted(obj)}"
            )
        items.append((context, [c if c[:1].isspace() else " " + c for c in choices], label))
        if limit is not None and len(items) >= limit:
            break
    return items


# ------------------------------------------------------------------ scoring
@torch.no_grad()
def continuation_scores(
    model: torch.nn.Module, tokenizer, pairs: Sequence[Tuple[str, str]], device: str = "cpu"
) -> List[Tuple[float, bool, int]]:
    """``(sum log p(continuation | context), all tokens greedy, continuation tokens)`` per pair.

    The pairs are scored in one right-padded batch (``attention_mask``
    marks the valid tokens).
    """
    encoded = []
    for context, continuation in pairs:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not ctx:  # nothing to condition on: start from end-of-text, as the harness does
            ctx = [tokenizer.eos_token_id]
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        encoded.append((ctx, cont))
    length = max(len(c) + len(t) for c, t in encoded)
    ids = torch.zeros(len(encoded), length, dtype=torch.long)
    mask = torch.zeros(len(encoded), length, dtype=torch.long)
    for i, (c, t) in enumerate(encoded):
        seq = c + t
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float(), -1)
    out = []
    for i, (c, t) in enumerate(encoded):
        positions = torch.arange(len(c) - 1, len(c) + len(t) - 1, device=logp.device)
        target = torch.tensor(t, device=logp.device)
        rows = logp[i, positions]
        out.append((float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()), len(t)))
    return out


def lambada_accuracy(
    model: torch.nn.Module, tokenizer, path: str, limit: Optional[int] = None, batch_size: int = 8, device: str = "cpu"
) -> Dict[str, float]:
    """LAMBADA last-word accuracy (greedy) and target perplexity over a ``{"text"}`` file.

    Returns
    -------
    dict
        ``acc`` (%), ``ppl`` (exp of minus the mean target log-probability), ``items``.
    """
    items = read_lambada_items(path, limit)
    correct, logprob = 0, 0.0
    model.eval().to(device)
    for start in range(0, len(items), batch_size):
        for lp, greedy, _ in continuation_scores(model, tokenizer, items[start : start + batch_size], device):
            correct += greedy
            logprob += lp
    return {"acc": 100.0 * correct / len(items), "ppl": math.exp(-logprob / len(items)), "items": len(items)}


def multiple_choice_accuracy(
    model: torch.nn.Module, tokenizer, path: str, limit: Optional[int] = None, device: str = "cpu"
) -> Dict[str, float]:
    """Zero-shot multiple-choice accuracy by log-likelihood (``acc``) and per byte (``acc_norm``), in %."""
    items = read_choice_items(path, limit)
    correct = correct_norm = 0
    model.eval().to(device)
    for context, choices, label in items:
        scores = continuation_scores(model, tokenizer, [(context, c) for c in choices], device)
        lp = [s[0] for s in scores]
        norm = [s / len(c.encode("utf-8")) for s, c in zip(lp, choices)]
        correct += int(max(range(len(lp)), key=lp.__getitem__) == label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == label)
    n = len(items)
    return {"acc": 100.0 * correct / n, "acc_norm": 100.0 * correct_norm / n, "items": n}
