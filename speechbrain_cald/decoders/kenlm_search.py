"""CTC beam search with a KenLM word n-gram (ARPA or KenLM binary), three ways, one interface.

Every searcher here is called as ``searcher(log_probs (B, T, C), rel_lens (B,))
-> list of str`` (the interface of ``ctc_lm.LexiconCTCDecoder``) and built by
:func:`kenlm_ctc_searcher` from the same settings (LM weight ``alpha`` on
natural-log LM scores, word bonus ``beta``, ``unk_score_offset`` for words
outside the LM's unigrams, beam size and pruning):

- ``"pyctcdecode"``: pyctcdecode's ``BeamSearchDecoderCTC`` (characters, or
  SentencePiece pieces marked ``▁``);
- ``"speechbrain"``: SpeechBrain's ``CTCBeamSearcher`` (its port of the same
  algorithm, KenLM scorer included);
- ``"cald"``: our lexicon CTC prefix beam search (``ctc_lm.LexiconCTCDecoder``,
  exact CTC prefix probabilities) over :class:`KenLMWordLM` (characters only).

Which one a recipe uses is a setting (``lm_decoder:``); ``docs/lm_decoding.md``
compares them on the same LM, acoustic outputs and settings
(``python -m speechbrain_cald.evaluation.lm_decoders``).

The LM is loaded once by KenLM (``kenlm.Model``; ARPA, possibly gzipped, or
``build_binary`` output): LibriSpeech's official n-grams (tens of millions of
n-grams) fit in a few GB, unlike a Python dictionary. The lexicon (unigrams)
is read from the ARPA's 1-gram section, or from a word list for binaries.
"""

from __future__ import annotations

import gzip
import os
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from speechbrain_cald.decoders.ngram import BOS, EOS, UNK

__all__ = ["KenLMWordLM", "LM_DECODERS", "kenlm_ctc_searcher", "read_arpa_unigrams"]

LM_DECODERS = ("pyctcdecode", "speechbrain", "cald")
SPM_SPACE = "\u2581"


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def read_arpa_unigrams(path: str) -> FrozenSet[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (``<s>``, ``</s>``, ``<unk>`` left out); reads no further.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> _ = open(p, "w").write("\\\\data\\\\\\nngram 1=3\\n\\n\\\\1-grams:\\n-1.0\\t<s>\\t0\\n-0.5\\tHI\\t0\\n-0.5\\t</s>\\n\\n\\\\end\\\\\\n")
    >>> sorted(read_arpa_unigrams(p))
    ['HI']
    """
    words = set()
    section = False
    with _open_text(path) as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                section = True
                continue
            if section:
                if not line:
                    continue
                if line.startswith("\\"):
                    break
                parts = line.split()
                if len(parts) >= 2:
                    words.add(parts[1])
    if not section:
        raise ValueError(f"{path}: no \\1-grams: section (not an ARPA file?)")
    return frozenset(words - {BOS, EOS, UNK})


def _lexicon_for(lm_path: str, unigrams_path: Optional[str]) -> FrozenSet[str]:
    if unigrams_path:
        with _open_text(unigrams_path) as f:
            return frozenset(w for line in f for w in line.split()[:1]) - {BOS, EOS, UNK}
    if lm_path.endswith((".arpa", ".arpa.gz")) or ".arpa" in os.path.basename(lm_path):
        return read_arpa_unigrams(lm_path)
    raise ValueError(
        f"LM '{lm_path}' looks like a KenLM binary: its words cannot be listed, so pass the lexicon as a word "
        "list (one word per line; LibriSpeech ships librispeech-vocab.txt) with `unigrams_path`"
    )


class KenLMWordLM:
    """A KenLM model behind ``ngram.ArpaLM``'s interface (``order``, ``vocabulary``, ``log10_prob``, ``state_after``).

    Contexts are word tuples, as for ``ArpaLM`` (``("<s>", "A")``); KenLM's
    own states are cached per context.

    Arguments
    ---------
    path : str
        ARPA (``.arpa``, ``.arpa.gz``) or KenLM binary file.
    unigrams_path : str, optional
        Word list (the lexicon) for a binary file.
    """

    def __init__(self, path: str, unigrams_path: Optional[str] = None, cache_size: int = 200_000):
        import kenlm

        if not os.path.exists(path):
            raise FileNotFoundError(f"KenLM: language model '{path}' does not exist")
        self.path = path
        self.model = kenlm.Model(path)
        self.order = int(self.model.order)
        self.vocabulary = _lexicon_for(path, unigrams_path)
        self._kenlm = kenlm
        self._states: Dict[Tuple[str, ...], object] = {}
        self._cache_size = cache_size

    def _state(self, context: Tuple[str, ...]):
        state = self._states.get(context)
        if state is not None:
            return state
        if len(self._states) > self._cache_size:
            self._states.clear()
        if context and context[0] == BOS:
            state = self._kenlm.State()
            self.model.BeginSentenceWrite(state)
            words = context[1:]
        else:
            state = self._kenlm.State()
            self.model.NullContextWrite(state)
            words = context
        for word in words:
            out = self._kenlm.State()
            self.model.BaseScore(state, word, out)
            state = out
        self._states[context] = state
        return state

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """``log10 P(word | context)`` (KenLM backs off; unknown words score as ``<unk>``)."""
        context = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        out = self._kenlm.State()
        return float(self.model.BaseScore(self._state(context), word, out))

    def state_after(self, context: Sequence[str], word: str) -> Tuple[str, ...]:
        """The context after ``word`` (the last ``order - 1`` words)."""
        if self.order == 1:
            return ()
        return (tuple(context) + (word,))[-(self.order - 1):]


def _frames(log_probs: torch.Tensor, lengths: Optional[torch.Tensor]) -> List[int]:
    T = log_probs.shape[1]
    if lengths is None:
        return [T] * log_probs.shape[0]
    return torch.round(lengths.float().cpu() * T).long().clamp(max=T).tolist()


class PyCTCDecodeSearcher:
    """pyctcdecode with KenLM, as ``searcher(log_probs, rel_lens) -> list of str``."""

    def __init__(self, vocab_list: Sequence[str], lm_path: str, blank_index: int = 0, alpha: float = 0.5,
                 beta: float = 1.0, beam_size: int = 16, unk_score_offset: float = -10.0,
                 beam_prune_logp: float = -10.0, token_prune_min_logp: float = -8.0, unigrams_path: Optional[str] = None,
                 lexicon: Optional[Iterable[str]] = None):
        from pyctcdecode import build_ctcdecoder

        labels = [("" if i == blank_index else str(v)) for i, v in enumerate(vocab_list)]
        unigrams = sorted(lexicon) if lexicon is not None else sorted(_lexicon_for(lm_path, unigrams_path))
        self.decoder = build_ctcdecoder(labels, kenlm_model_path=lm_path, unigrams=unigrams, alpha=alpha, beta=beta,
                                        unk_score_offset=unk_score_offset)
        self.beam_size, self.beam_prune_logp, self.token_prune_min_logp = beam_size, beam_prune_logp, token_prune_min_logp

    def __call__(self, log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> List[str]:
        lp = log_probs.detach().float().cpu().numpy()
        return [" ".join(self.decoder.decode(np.ascontiguousarray(lp[i, :n]), beam_width=self.beam_size,
                                             beam_prune_logp=self.beam_prune_logp,
                                             token_min_logp=self.token_prune_min_logp).split())
                for i, n in enumerate(_frames(log_probs, lengths))]


class SpeechBrainKenLMSearcher:
    """SpeechBrain's ``CTCBeamSearcher`` with its KenLM scorer, as ``searcher(log_probs, rel_lens) -> list of str``."""

    def __init__(self, vocab_list: Sequence[str], lm_path: str, blank_index: int = 0, alpha: float = 0.5,
                 beta: float = 1.0, beam_size: int = 16, unk_score_offset: float = -10.0,
                 beam_prune_logp: float = -10.0, token_prune_min_logp: float = -8.0, unigrams_path: Optional[str] = None,
                 lexicon: Optional[Iterable[str]] = None, space_token: str = " "):
        from speechbrain.decoders.ctc import CTCBeamSearcher

        unigrams = sorted(lexicon) if lexicon is not None else sorted(_lexicon_for(lm_path, unigrams_path))
        self.searcher = CTCBeamSearcher(
            blank_index=blank_index, vocab_list=list(vocab_list), space_token=space_token, kenlm_model_path=lm_path,
            unigrams=unigrams, alpha=alpha, beta=beta, beam_size=beam_size, unk_score_offset=unk_score_offset,
            beam_prune_logp=beam_prune_logp, token_prune_min_logp=token_prune_min_logp)

    def __call__(self, log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> List[str]:
        if lengths is None:
            lengths = torch.ones(log_probs.shape[0])
        hyps = self.searcher(log_probs.detach().float().cpu(), lengths.float().cpu())
        return [" ".join(h[0].text.split()) for h in hyps]


def kenlm_ctc_searcher(kind: str, vocab_list: Sequence[str], lm_path: str, blank_index: int = 0,
                       alpha: float = 0.5, beta: float = 1.0, beam_size: int = 16, unk_score_offset: float = -10.0,
                       beam_prune_logp: float = -10.0, token_prune_min_logp: float = -8.0,
                       unigrams_path: Optional[str] = None, space_token: str = " "):
    """A KenLM-fused CTC beam search of ``kind`` (``LM_DECODERS``), all with the same settings.

    Arguments
    ---------
    kind : str
        ``"pyctcdecode"``, ``"speechbrain"`` or ``"cald"``.
    vocab_list : sequence of str
        Label of each CTC output (characters with ``" "`` between words, or
        SentencePiece pieces with ``"▁"``); the blank's entry is ignored.
    lm_path : str
        ARPA / KenLM binary word n-gram.
    blank_index : int
        CTC blank.
    alpha, beta, unk_score_offset : float
        LM weight (on natural-log scores), word bonus, out-of-lexicon penalty.
    beam_size, beam_prune_logp, token_prune_min_logp
        Beam and pruning.
    unigrams_path : str, optional
        The lexicon as a word list (needed for binary LMs).
    space_token : str
        The word separator among character labels.

    Returns
    -------
    callable
        ``searcher(log_probs (B, T, C), rel_lens (B,)) -> list of str``.
    """
    settings = dict(alpha=alpha, beta=beta, beam_size=beam_size, unk_score_offset=unk_score_offset,
                    beam_prune_logp=beam_prune_logp, token_prune_min_logp=token_prune_min_logp)
    if kind == "pyctcdecode":
        return PyCTCDecodeSearcher(vocab_list, lm_path, blank_index, unigrams_path=unigrams_path, **settings)
    if kind == "speechbrain":
        return SpeechBrainKenLMSearcher(vocab_list, lm_path, blank_index, unigrams_path=unigrams_path,
                                        space_token=space_token, **settings)
    if kind == "cald":
        from speechbrain_cald.decoders.ctc_lm import LexiconCTCDecoder, NGramScorer

        if any(str(v).startswith(SPM_SPACE) for v in vocab_list):
            raise ValueError("lm_decoder 'cald' searches over characters; for SentencePiece tokens use "
                             "'pyctcdecode' or 'speechbrain'")
        scorer = NGramScorer(KenLMWordLM(lm_path, unigrams_path), alpha=alpha, beta=beta, unk_score_offset=unk_score_offset)
        return LexiconCTCDecoder(list(vocab_list), scorer, blank_index=blank_index, space_token=space_token,
                                 beam_size=beam_size, beam_prune_logp=beam_prune_logp,
                                 token_prune_min_logp=token_prune_min_logp)
    raise ValueError(f"lm_decoder '{kind}': expected one of {LM_DECODERS}")
