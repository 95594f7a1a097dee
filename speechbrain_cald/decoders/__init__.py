"""decoders: turning CTC outputs into words.

ngram     word n-gram language models in ARPA format (estimate, read, score; a CLI)
ctc_lm    lexicon-constrained CTC prefix beam search fused with a word n-gram
kenlm_search  KenLM word n-grams (ARPA / binary) in three CTC beam searches behind one
          interface: pyctcdecode, SpeechBrain's CTCBeamSearcher, ours (kenlm_ctc_searcher)

Names are imported on first use, so ``python -m speechbrain_cald.decoders.ngram``
runs the module once.
"""

import importlib

_EXPORTS = {
    "ArpaLM": "ngram",
    "estimate_ngram": "ngram",
    "write_arpa": "ngram",
    "NGramScorer": "ctc_lm",
    "lexicon_ctc_searcher": "ctc_lm",
    "LexiconCTCDecoder": "ctc_lm",
    "KenLMWordLM": "kenlm_search",
    "kenlm_ctc_searcher": "kenlm_search",
    "read_arpa_unigrams": "kenlm_search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
