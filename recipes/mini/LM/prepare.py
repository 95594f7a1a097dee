#!/usr/bin/env python3
"""Stages 0 and 1 of the mini LM recipe: the GCIDE corpus, and a BPE tokenizer learnt on it.

``corpus``: the GNU Collaborative International Dictionary of English (Debian
``dict-gcide``, GPL-2+), one JSON line per dictionary entry, in the Pile's
layout: ``<data_folder>/corpus/{train/gcide.jsonl, val.jsonl, test.jsonl}``
(one entry in 50 to test, one to val, spread over the alphabet). The same
options always give the same bytes.

``tokenizer``: a GPT-NeoX-style byte-level BPE learnt on the training split,
saved as a transformers tokenizer in ``<data_folder>/tokenizer`` (what the
Pile recipe takes from the checkpoint folder).

    python prepare.py corpus --data_folder data
    python prepare.py tokenizer --data_folder data --vocab_size 4096
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from speechbrain_cald.data.bpe import train_bpe_tokenizer
from speechbrain_cald.data.gcide import GCIDE_DICT, GcideMissingError, write_gcide_corpus
from speechbrain_cald.data.text_corpus import iter_documents


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["corpus", "tokenizer"])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--max_train", type=int, default=0, help="corpus: at most this many training entries (0: all)")
    p.add_argument("--gcide", default=GCIDE_DICT, help="corpus: the GCIDE dictd file (Debian dict-gcide)")
    p.add_argument("--vocab_size", type=int, default=4096, help="tokenizer: BPE vocabulary size")
    p.add_argument("--tokenizer_docs", type=int, default=40000, help="tokenizer: learn from the first N training entries")
    args = p.parse_args(argv)
    t0 = time.time()
    corpus = os.path.join(args.data_folder, "corpus")
    if args.what == "corpus":
        try:
            counts = write_gcide_corpus(corpus, max_train=args.max_train, path=args.gcide)
        except GcideMissingError as err:
            print(f"prepare.py: {err}", file=sys.stderr)
            return 1
        print(f"GCIDE corpus: {counts} documents -> {corpus} ({time.time() - t0:.1f} s)")
        return 0
    train = os.path.join(corpus, "train", "gcide.jsonl")
    if not os.path.isfile(train):
        print(f"prepare.py: {train} missing: run 'prepare.py corpus' (stage 0) first", file=sys.stderr)
        return 1
    docs = (text for i, (_, text) in enumerate(iter_documents(train)) if i < args.tokenizer_docs)
    out = os.path.join(args.data_folder, "tokenizer")
    tokenizer = train_bpe_tokenizer(docs, args.vocab_size, out)
    print(f"BPE tokenizer, {len(tokenizer)} tokens -> {out} ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
