"""A recipe's word n-gram (ARPA) from a text corpus or from its training transcripts.

``python -m speechbrain_cald.decoders.word_lm OUT.arpa --text librispeech-lm-norm.txt --order 3``
or ``... --manifests train.csv``: interpolated absolute discounting
(``ngram.estimate_ngram``), written as ARPA, which KenLM then loads for
decoding. The estimate runs in Python and holds every distinct n-gram in
memory: fine for transcripts and text files of up to a few hundred MB
(``--max_text_mb``); for LibriSpeech's full 4.3 GB ``librispeech-lm-norm.txt``
use KenLM's ``lmplz`` (``lmplz -o 3 < librispeech-lm-norm.txt > 3-gram.arpa``)
or LibriSpeech's published ARPA files (``3-gram.arpa.gz``,
``3-gram.pruned.1e-7.arpa.gz``, ``4-gram.arpa.gz``), and give the file to the
recipe with ``--lm``.
"""

from __future__ import annotations

import argparse
import os
from typing import Iterator, List, Optional, Sequence

from speechbrain_cald.decoders.ngram import estimate_ngram, write_arpa

__all__ = ["TextTooLargeError", "build_word_lm", "main"]


class TextTooLargeError(RuntimeError):
    """A text corpus too large for the in-memory estimate."""


def _lines(paths: Sequence[str], lower: bool) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line.lower() if lower else line


def build_word_lm(out: str, texts: Sequence[str] = (), manifests: Sequence[str] = (), order: int = 3,
                  field: str = "wrd", max_text_mb: float = 500.0, lower: bool = False) -> str:
    """Estimate a word ``order``-gram from text files (one sentence per line) and/or manifests; write ARPA.

    Arguments
    ---------
    out : str
        The ``.arpa`` file.
    texts : sequence of str
        Plain-text corpora, one sentence per line.
    manifests : sequence of str
        SpeechBrain CSVs whose ``field`` column holds transcripts.
    order : int
        n-gram order.
    field : str
        Transcript column of the manifests.
    max_text_mb : float
        Refuse text files larger than this in total (the estimate is in memory).
    lower : bool
        Lower-case the text files (for lower-case transcripts).

    Returns
    -------
    str
        ``out``.
    """
    from speechbrain_cald.data.manifest import read_manifest

    size_mb = sum(os.path.getsize(t) for t in texts) / 2**20
    if size_mb > max_text_mb:
        raise TextTooLargeError(
            f"word LM: {', '.join(texts)} hold {size_mb:,.0f} MB of text, more than the in-memory estimate takes "
            f"(--max_text_mb {max_text_mb:g}). Estimate it with KenLM's lmplz (`lmplz -o {order} < text > lm.arpa`) "
            "or use a published ARPA file (LibriSpeech: 3-gram.pruned.1e-7.arpa.gz, 3-gram.arpa.gz, 4-gram.arpa.gz), "
            "and pass it to the recipe with --lm")
    sentences: List[str] = []
    for manifest in manifests:
        rows = read_manifest(manifest)
        if rows and field not in rows[0]:
            raise KeyError(f"{manifest} has no column '{field}'; columns: {sorted(rows[0])}")
        sentences += [row[field] for row in rows]

    def all_sentences():
        yield from sentences
        yield from _lines(texts, lower)

    lm = estimate_ngram(all_sentences(), order=order)
    write_arpa(lm, out)
    sizes = ", ".join(f"{len(lm[n]):,} {n}-grams" for n in range(1, order + 1))
    print(f"word {order}-gram ({sizes}) from {', '.join([*texts, *manifests])} -> {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--text", nargs="*", default=[], help="text files, one sentence per line")
    p.add_argument("--manifests", nargs="*", default=[], help="SpeechBrain CSVs with a transcript column")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--field", default="wrd")
    p.add_argument("--max_text_mb", type=float, default=500.0)
    p.add_argument("--lower", action="store_true", help="lower-case the text files")
    args = p.parse_args(argv)
    if not args.text and not args.manifests:
        p.error("give --text and/or --manifests")
    build_word_lm(args.out, args.text, args.manifests, args.order, args.field, args.max_text_mb, args.lower)


if __name__ == "__main__":
    main()
