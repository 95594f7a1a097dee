"""A tiny English-like JSON-lines corpus in the Pile's layout, for the LM recipe tests."""

import json
import random

import zstandard

WORDS = (
    "the a cat dog bird sat ran flew slept on under over near mat tree house roof big small "
    "red green old young quickly slowly and but then"
).split()


def lm_documents(n: int, seed: int = 0):
    """Short English-like documents (a random word grammar): text for a tiny LM."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) + "." for _ in range(n)]


def write_pile_corpus(root, docs):
    """The Pile's layout: train/00.jsonl + train/01.jsonl.zst, val.jsonl.zst, test.jsonl."""
    def lines(part):
        return "".join(json.dumps({"text": d, "meta": {"pile_set_name": "Pile-CC"}}) + "\n" for d in part)

    n = len(docs)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train" / "00.jsonl").write_text(lines(docs[: n // 2]))
    (root / "train" / "01.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines(docs[n // 2 : 8 * n // 10]).encode()))
    (root / "val.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines(docs[8 * n // 10 : 9 * n // 10]).encode()))
    (root / "test.jsonl").write_text(lines(docs[9 * n // 10 :]))
    return root
