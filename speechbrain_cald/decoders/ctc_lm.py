"""Lexicon-constrained CTC prefix beam search with a word n-gram.

:class:`LexiconCTCDecoder` is the prefix beam search of Hannun et al. (2014):
each prefix keeps its exact CTC probability split into "ends in blank" and
"ends in a label", so with an unbounded beam it returns the text that
maximises ``log P_ctc(text) + LM`` over every alignment (a test checks this
against exhaustive enumeration). SpeechBrain's ``CTCPrefixBeamSearcher`` and
``CTCBeamSearcher`` (pyctcdecode's algorithm) were tried first: with pruning
off they disagreed with that enumeration on 3-5 of 12 random inputs (their
own docs warn the prefix searcher "can be more unstable"), hence this one.

The word n-gram is an :class:`~speechbrain_cald.decoders.ngram.ArpaLM`
scored through :class:`NGramScorer`, which also speaks the scorer interface of
SpeechBrain's searchers (``order``, ``get_start_state``, ``score``,
``score_partial_token``). Words outside the lexicon, and partial words that
begin no lexicon word, pay ``unk_score_offset`` (natural log).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from speechbrain_cald.decoders.ngram import BOS, EOS, ArpaLM

__all__ = ["LexiconCTCDecoder", "NGramScorer", "lexicon_ctc_searcher"]

_NEG_INF = float("-inf")

_LN10 = math.log(10.0)


class NGramScorer:
    """Shallow-fusion scorer for SpeechBrain's CTC beam searchers (its ``lm`` interface).

    A word ``w`` after context ``h`` scores ``alpha * ln P(w | h) + beta``
    (plus ``unk_score_offset`` when ``w`` is not in the lexicon); the last word
    also gets ``ln P(</s> | ...)``.

    Arguments
    ---------
    lm : ArpaLM
        The word n-gram.
    lexicon : iterable of str, optional
        Allowed words; default: the LM's vocabulary.
    alpha : float
        LM weight.
    beta : float
        Word insertion bonus.
    unk_score_offset : float
        Added (natural log) for a word, or partial word, outside the lexicon.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_cald.decoders.ngram import estimate_ngram, write_arpa
    >>> path = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_arpa(estimate_ngram(["the cat", "the dog"], order=2), path)
    >>> scorer = NGramScorer(ArpaLM(path), alpha=1.0, beta=0.0)
    >>> s0 = scorer.get_start_state()
    >>> s_the, _ = scorer.score(s0, "the")
    >>> s_cat, _ = scorer.score(s0, "cat")
    >>> s_the > s_cat, scorer.score_partial_token("ca"), scorer.score_partial_token("cx")
    (True, 0.0, -10.0)
    """

    def __init__(
        self,
        lm: ArpaLM,
        lexicon: Optional[Iterable[str]] = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        unk_score_offset: float = -10.0,
    ):
        self.lm = lm
        self.lexicon = frozenset(lexicon) if lexicon is not None else lm.vocabulary
        if not self.lexicon:
            raise ValueError(f"NGramScorer: empty lexicon (LM '{lm.path}' has no words?)")
        self.prefixes = frozenset(w[:i] for w in self.lexicon for i in range(1, len(w) + 1))
        self.alpha = alpha
        self.beta = beta
        self.unk_score_offset = unk_score_offset

    @property
    def order(self) -> int:
        """The n-gram order (the searcher prunes history with it)."""
        return self.lm.order

    def get_start_state(self) -> Tuple[str, ...]:
        """The sentence-start context."""
        return (BOS,)

    def score_partial_token(self, partial_token: str) -> float:
        """0 when ``partial_token`` begins a lexicon word, else the unknown-word offset."""
        return 0.0 if partial_token in self.prefixes else self.unk_score_offset

    def score(self, prev_state: Tuple[str, ...], word: str, is_last_word: bool = False) -> Tuple[float, Tuple[str, ...]]:
        """Fused score of ``word`` after ``prev_state`` and the new state.

        The searcher asks for ``word == ""`` when a hypothesis ends without a
        pending word (or is empty): only the sentence end is scored then.
        """
        if not word:
            end = self.lm.log10_prob(prev_state, EOS) if is_last_word else 0.0
            return self.alpha * end * _LN10, prev_state
        log10_p = self.lm.log10_prob(prev_state, word)
        state = self.lm.state_after(prev_state, word)
        if is_last_word:
            log10_p += self.lm.log10_prob(state, EOS)
        score = self.alpha * log10_p * _LN10 + self.beta
        if word not in self.lexicon:
            score += self.unk_score_offset
        return score, state


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class LexiconCTCDecoder:
    """CTC prefix beam search over characters, fused with a word n-gram and a lexicon.

    A prefix's score while searching is ``log P_ctc(prefix) + (LM of its
    completed words) + (the partial word's lexicon penalty)``; a word is scored
    when the space after it (or the end) arrives, the last one with the
    sentence end. Leading and double spaces are not hypothesised; a trailing
    space merges with the same text without it.

    Arguments
    ---------
    labels : sequence of str
        The CTC output labels by index (blank included).
    scorer : NGramScorer
        The word LM and lexicon.
    blank_index : int
        Index of the CTC blank.
    space_token : str
        The label that separates words.
    beam_size : int
        Prefixes kept after each frame.
    beam_prune_logp : float
        Prefixes scoring below the best by more than this are dropped.
    token_prune_min_logp : float
        Labels with a frame log-probability below this are not tried at that
        frame (the best label of each frame always is).

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_cald.decoders.ngram import estimate_ngram, write_arpa
    >>> path = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_arpa(estimate_ngram(["ab ba", "ba ab"], order=2), path)
    >>> decoder = LexiconCTCDecoder(["<b>", " ", "a", "b"], NGramScorer(ArpaLM(path), alpha=0.5, beta=1.0))
    >>> # greedy reads "ab bb" (last frame: b 0.5, a 0.46); "bb" is no word, "ba" is
    >>> p = torch.full((1, 7, 4), 0.02)
    >>> for t, c in enumerate([2, 0, 3, 1, 3, 0, 3]):
    ...     p[0, t, c] = 0.94
    >>> p[0, 6, 3], p[0, 6, 2] = 0.5, 0.46
    >>> "".join(["", " ", "a", "b"][i] for i in p[0].argmax(-1).tolist())
    'ab bb'
    >>> decoder(p.log(), torch.ones(1))
    ['ab ba']
    """

    def __init__(
        self, labels: Sequence[str], scorer: NGramScorer, blank_index: int = 0, space_token: str = " ",
        beam_size: int = 16, beam_prune_logp: float = -10.0, token_prune_min_logp: float = -8.0,
    ):
        labels = list(labels)
        if space_token not in labels:
            raise ValueError(f"LexiconCTCDecoder: the word separator {space_token!r} is not a CTC label ({labels})")
        if not 0 <= blank_index < len(labels):
            raise ValueError(f"LexiconCTCDecoder: blank_index {blank_index} outside the {len(labels)} labels")
        if beam_size < 1:
            raise ValueError(f"LexiconCTCDecoder: beam_size must be >= 1, got {beam_size}")
        self.labels = labels
        self.scorer = scorer
        self.blank = blank_index
        self.space = labels.index(space_token)
        self.beam_size = beam_size
        self.beam_prune_logp = beam_prune_logp
        self.token_prune_min_logp = token_prune_min_logp

    def __call__(self, log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> List[str]:
        """Decode a batch.

        Arguments
        ---------
        log_probs : torch.Tensor
            CTC log-probabilities ``(B, T, C)``.
        lengths : torch.Tensor, optional
            Relative valid lengths ``(B,)`` in ``[0, 1]`` (SpeechBrain's convention); ``None`` = all ``T``.

        Returns
        -------
        list of str
            The best text of each utterance, words single-spaced.
        """
        if log_probs.dim() != 3 or log_probs.shape[-1] != len(self.labels):
            raise ValueError(f"LexiconCTCDecoder: log_probs must be (B, T, {len(self.labels)}), "
                             f"got {tuple(log_probs.shape)}")
        lp = log_probs.detach().float().cpu().numpy()
        T = lp.shape[1]
        frames = [T] * lp.shape[0] if lengths is None else torch.round(lengths.float().cpu() * T).long().tolist()
        return [self.decode(lp[i, :n]) for i, n in enumerate(frames)]

    def decode(self, log_probs: np.ndarray) -> str:
        """The best text for one utterance's ``(T, C)`` log-probabilities."""
        scorer, blank, space = self.scorer, self.blank, self.space
        # text -> [log P(ends in blank), log P(ends in a label)]; text -> (LM of finished words, state, partial penalty)
        beams: Dict[str, List[float]] = {"": [0.0, _NEG_INF]}
        lm: Dict[str, Tuple[float, tuple, float]] = {"": (0.0, scorer.get_start_state(), 0.0)}
        last_label: Dict[str, int] = {"": -1}
        for frame in log_probs:
            tokens = [int(c) for c in np.nonzero(frame >= self.token_prune_min_logp)[0] if c != blank]
            best = int(frame.argmax())
            if best != blank and best not in tokens:
                tokens.append(best)
            nxt: Dict[str, List[float]] = {}
            for text, (p_b, p_nb) in beams.items():
                total = _logaddexp(p_b, p_nb)
                cell = nxt.setdefault(text, [_NEG_INF, _NEG_INF])
                cell[0] = _logaddexp(cell[0], total + float(frame[blank]))
                for c in tokens:
                    p_c = float(frame[c])
                    if c == last_label[text]:
                        cell[1] = _logaddexp(cell[1], p_nb + p_c)  # a repeat: same text
                        from_prev = p_b + p_c                       # a new label only after a blank
                    else:
                        from_prev = total + p_c
                    if c == space and (not text or text.endswith(" ")):
                        continue  # no leading or double spaces
                    new = text + self.labels[c]
                    if new not in lm:
                        lm[new] = self._extend(lm[text], text, self.labels[c])
                        last_label[new] = c
                    new_cell = nxt.setdefault(new, [_NEG_INF, _NEG_INF])
                    new_cell[1] = _logaddexp(new_cell[1], from_prev)
            beams = self._prune(nxt, lm)
            # only the surviving prefixes can be extended: forget the rest (long recordings)
            lm = {t: lm[t] for t in beams}
            last_label = {t: last_label[t] for t in beams}
        return self._finish(beams, lm)

    def _extend(self, entry, text: str, label: str):
        """LM entry of ``text + label`` from ``text``'s."""
        done, state, _ = entry
        if label == " ":
            word = text[text.rfind(" ") + 1:]
            score, state = self.scorer.score(state, word)
            return done + score, state, 0.0
        partial = text[text.rfind(" ") + 1:] + label
        return done, state, self.scorer.score_partial_token(partial)

    def _prune(self, beams: Dict[str, List[float]], lm) -> Dict[str, List[float]]:
        scored = sorted(((_logaddexp(*p) + lm[t][0] + lm[t][2], t) for t, p in beams.items()), reverse=True)
        floor = scored[0][0] + self.beam_prune_logp
        return {t: beams[t] for s, t in scored[:self.beam_size] if s >= floor}

    def _finish(self, beams: Dict[str, List[float]], lm) -> str:
        """Score each prefix's last word and the sentence end; merge trailing-space twins."""
        final: Dict[str, float] = {}
        for text, p in beams.items():
            done, state, _ = lm[text]
            word = "" if text.endswith(" ") else text[text.rfind(" ") + 1:]
            end_score, _ = self.scorer.score(state, word, is_last_word=True)
            key = text.rstrip(" ")
            final[key] = _logaddexp(final.get(key, _NEG_INF), _logaddexp(*p) + done + end_score)
        return max(final, key=final.get)


def lexicon_ctc_searcher(
    vocab_list, lm_path: str, alpha: float = 0.5, beta: float = 1.0, beam_size: int = 16,
    unk_score_offset: float = -10.0, blank_index: int = 0, space_token: str = " ",
    beam_prune_logp: float = -10.0, token_prune_min_logp: float = -8.0,
) -> LexiconCTCDecoder:
    """The lexicon + word n-gram CTC decoder for the ARPA file ``lm_path`` (a YAML-friendly constructor).

    Arguments
    ---------
    vocab_list : list of str
        The CTC output labels by index (blank included).
    lm_path : str
        ARPA word n-gram; its vocabulary is the lexicon.
    alpha, beta, unk_score_offset : float
        See :class:`NGramScorer`.
    beam_size, blank_index, space_token, beam_prune_logp, token_prune_min_logp
        See :class:`LexiconCTCDecoder`.

    Returns
    -------
    LexiconCTCDecoder
        Call it as ``decoder(log_probs (B, T, C), rel_lens (B,)) -> list of str``.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_cald.decoders.ngram import estimate_ngram, write_arpa
    >>> path = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_arpa(estimate_ngram(["ab ba"], order=2), path)
    >>> decoder = lexicon_ctc_searcher(["<b>", " ", "a", "b"], path, beam_size=8)
    >>> decoder.beam_size, sorted(decoder.scorer.lexicon)
    (8, ['ab', 'ba'])
    """
    scorer = NGramScorer(ArpaLM(lm_path), alpha=alpha, beta=beta, unk_score_offset=unk_score_offset)
    return LexiconCTCDecoder(vocab_list, scorer, blank_index=blank_index, space_token=space_token, beam_size=beam_size,
                             beam_prune_logp=beam_prune_logp, token_prune_min_logp=token_prune_min_logp)
