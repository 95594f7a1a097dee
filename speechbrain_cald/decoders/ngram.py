"""Word n-gram language models in ARPA format: estimate, read, score.

A recipe's stage 1 estimates a small word n-gram from its training
transcripts (:func:`estimate_ngram`, :func:`write_arpa`); the decoder reads
any ARPA file (ours or one made by KenLM's ``lmplz``, e.g. LibriSpeech's
3-gram) with :class:`ArpaLM`, so no compiled LM library is needed.

Estimation is interpolated absolute discounting (Ney et al., 1994) with
add-one unigrams over the lexicon::

    P(w | h) = max(c(h w) - d, 0) / c(h) + d * N1+(h •) / c(h) * P(w | h')

where ``h'`` drops the oldest word of ``h``. Written in ARPA's backoff form
(listed n-grams carry the interpolated probability, a context's backoff
weight is its ``d * N1+(h •) / c(h)``), the two are the same model.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from speechbrain_cald.files import atomic_write

__all__ = ["ArpaLM", "NGramCounts", "estimate_ngram", "write_arpa", "main"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# ARPA's "impossible": log10 probability of <s>, which is never predicted
_LOG10_ZERO = -99.0

NGramCounts = Dict[int, Dict[Tuple[str, ...], float]]


def estimate_ngram(
    sentences: Iterable[str], order: int = 3, discount: float = 0.75, lexicon: Optional[Iterable[str]] = None
) -> NGramCounts:
    """Estimate an interpolated absolute-discounting word n-gram.

    Arguments
    ---------
    sentences : iterable of str
        Training transcripts, words separated by whitespace.
    order : int
        Longest n-gram (1 = unigrams only).
    discount : float
        Absolute discount ``d`` in ``(0, 1)``.
    lexicon : iterable of str, optional
        Extra words that get a unigram probability even when unseen.

    Returns
    -------
    dict
        ``{n: {ngram tuple: log10 probability}}`` for n = 1..order, plus
        ``{-n: {context tuple: log10 backoff weight}}`` for the contexts of
        order n+1 (ARPA's second column).

    Example
    -------
    >>> lm = estimate_ngram(["a b", "a b", "a c"], order=2)
    >>> round(10 ** lm[2][("a", "b")], 3), round(10 ** lm[2][("a", "c")], 3)
    (0.524, 0.155)
    >>> abs(sum(10 ** p for k, p in lm[1].items() if k != ("<s>",)) - 1) < 1e-9
    True
    """
    if order < 1:
        raise ValueError(f"estimate_ngram: order must be >= 1, got {order}")
    if not 0 < discount < 1:
        raise ValueError(f"estimate_ngram: discount must lie in (0, 1), got {discount}")
    counts: Dict[int, Counter] = {n: Counter() for n in range(1, order + 1)}
    n_sentences = 0
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        n_sentences += 1
        padded = [BOS] + words + [EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                gram = tuple(padded[i:i + n])
                if n == 1 and gram == (BOS,):
                    continue  # <s> is context only
                counts[n][gram] += 1
    if n_sentences == 0:
        raise ValueError("estimate_ngram: no non-empty sentence to estimate from")

    # unigrams: add-one over every seen word, the lexicon, </s> and <unk>
    types = set(g[0] for g in counts[1]) | set(lexicon or ()) | {EOS, UNK}
    total = sum(counts[1].values())
    lm: NGramCounts = {1: {(w,): math.log10((counts[1][(w,)] + 1) / (total + len(types))) for w in sorted(types)}}
    lm[1][(BOS,)] = _LOG10_ZERO
    log_probs = dict(lm[1])  # every order so far, flat: what ARPA backoff reads
    bows: Dict[Tuple[str, ...], float] = {}
    for n in range(2, order + 1):
        context_total: Dict[Tuple[str, ...], float] = defaultdict(float)
        context_types: Dict[Tuple[str, ...], int] = defaultdict(int)
        for gram, c in counts[n].items():
            context_total[gram[:-1]] += c
            context_types[gram[:-1]] += 1
        gamma = {h: discount * context_types[h] / context_total[h] for h in context_total}
        lm[n] = {}
        for gram, c in counts[n].items():
            h = gram[:-1]
            lower = 10 ** _backoff_log10(log_probs, bows, gram[1:-1], gram[-1])
            lm[n][gram] = math.log10((c - discount) / context_total[h] + gamma[h] * lower)
        lm[-(n - 1)] = {h: math.log10(g) for h, g in gamma.items()}
        log_probs.update(lm[n])
        bows.update(lm[-(n - 1)])
    return lm


def _backoff_log10(
    probs: Dict[Tuple[str, ...], float], bows: Dict[Tuple[str, ...], float], context: Tuple[str, ...], word: str
) -> float:
    """ARPA backoff: ``log10 P(word | context)`` from listed n-grams and context backoff weights (all log10)."""
    penalty = 0.0
    while True:
        gram = context + (word,)
        if gram in probs:
            return penalty + probs[gram]
        if not context:
            return penalty + probs.get((UNK,), _LOG10_ZERO)
        penalty += bows.get(context, 0.0)
        context = context[1:]


def write_arpa(lm: NGramCounts, path: str) -> None:
    """Write :func:`estimate_ngram`'s model as an ARPA file (atomically).

    Arguments
    ---------
    lm : dict
        The model.
    path : str
        Output ``.arpa`` file.
    """
    order = max(n for n in lm if n > 0)
    lines = ["", "\\data\\"] + [f"ngram {n}={len(lm[n])}" for n in range(1, order + 1)] + [""]
    for n in range(1, order + 1):
        lines.append(f"\\{n}-grams:")
        bows = lm.get(-n, {})
        for gram in sorted(lm[n]):
            line = f"{lm[n][gram]:.6f}\t{' '.join(gram)}"
            if n < order:
                line += f"\t{bows.get(gram, 0.0):.6f}"
            lines.append(line)
        lines.append("")
    lines.append("\\end\\")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")


class ArpaLM:
    """A word n-gram read from an ARPA file, scored with backoff.

    Arguments
    ---------
    path : str
        The ``.arpa`` file (plain text, as written by :func:`write_arpa` or KenLM's ``lmplz``).

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_arpa(estimate_ngram(["a b", "a b", "a c"], order=2), path)
    >>> lm = ArpaLM(path)
    >>> lm.order, round(10 ** lm.log10_prob(("a",), "b"), 3)
    (2, 0.524)
    >>> lm.log10_prob(("b",), "c") < lm.log10_prob(("a",), "c")   # backs off from an unseen bigram
    True
    """

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise FileNotFoundError(f"ArpaLM: language model '{path}' does not exist")
        self.path = path
        self.probs: Dict[Tuple[str, ...], float] = {}
        self.bows: Dict[Tuple[str, ...], float] = {}
        self.order = 0
        section = 0
        with open(path) as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("ngram ") or line == "\\data\\":
                    continue
                if line == "\\end\\":
                    break
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:].split("-")[0])
                    self.order = max(self.order, section)
                    continue
                parts = line.split()
                if section == 0:
                    raise ValueError(f"ArpaLM: {path}:{number}: {line!r} outside any \\N-grams: section (not an ARPA file?)")
                if len(parts) < section + 1:
                    raise ValueError(f"ArpaLM: {path}:{number}: expected '<log10 p> <{section} words> [bow]', got {line!r}")
                gram = tuple(parts[1:1 + section])
                self.probs[gram] = float(parts[0])
                if len(parts) > section + 1:
                    self.bows[gram] = float(parts[section + 1])
        if self.order == 0:
            raise ValueError(f"ArpaLM: {path} holds no n-gram section (not an ARPA file?)")
        self.vocabulary = frozenset(g[0] for g in self.probs if len(g) == 1) - {BOS, EOS, UNK}

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """``log10 P(word | context)``; words outside the vocabulary score as ``<unk>``.

        Arguments
        ---------
        context : sequence of str
            Preceding words (any length; the last ``order - 1`` are used).
        word : str
            The predicted word (or ``</s>``).

        Returns
        -------
        float
            The backed-off log10 probability.
        """
        if (word,) not in self.probs:
            word = UNK
        context = tuple(context)[len(context) - (self.order - 1):] if self.order > 1 else ()
        return _backoff_log10(self.probs, self.bows, context, word)

    def state_after(self, context: Sequence[str], word: str) -> Tuple[str, ...]:
        """The context (last ``order - 1`` words) after ``word``."""
        if self.order == 1:
            return ()
        return (tuple(context) + (word,))[-(self.order - 1):]


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m speechbrain_cald.decoders.ngram OUT.arpa TRAIN.csv [...] --order 3``: a word n-gram from transcripts."""
    from speechbrain_cald.data.manifest import read_manifest

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", help="the .arpa file to write")
    parser.add_argument("manifests", nargs="+", help="SpeechBrain CSV files with a transcript column")
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--discount", type=float, default=0.75)
    parser.add_argument("--field", default="wrd", help="the transcript column")
    args = parser.parse_args(argv)
    sentences = []
    for manifest in args.manifests:
        rows = read_manifest(manifest)
        if rows and args.field not in rows[0]:
            raise KeyError(f"{manifest} has no column '{args.field}'; columns: {sorted(rows[0])}")
        sentences += [row[args.field] for row in rows]
    lm = estimate_ngram(sentences, order=args.order, discount=args.discount)
    write_arpa(lm, args.out)
    sizes = ", ".join(f"{len(lm[n]):,} {n}-grams" for n in range(1, args.order + 1))
    print(f"word {args.order}-gram from {len(sentences):,} transcripts ({sizes}) -> {args.out}")


if __name__ == "__main__":
    main()
