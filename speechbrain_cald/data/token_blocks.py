"""Token shards on disk and the fixed-length blocks an LM trains on.

Stage 1 of an LM recipe (:func:`tokenize_split`) streams the documents of a
split (the files listed in its stage-0 manifest), tokenises them with the
checkpoint's own tokenizer, appends the end-of-text token after every document
(as GPT-NeoX / Pythia were trained: documents concatenated with an EOD token)
and writes one flat token file per split::

    <save_folder>/tokens/<split>.bin    uint16 (vocabulary < 65536) or uint32
    <save_folder>/tokens/<split>.json   counts, dtype, tokenizer, per-file tokens

and adds each file's token count to the split's manifest (a ``tokens`` column).

Nothing is held in memory beyond a batch of documents, so a corpus larger than
memory tokenises and trains. The shard is rewritten only when its manifest's
sources or the tokenizer changed.

:class:`TokenBlocks` reads a shard through ``numpy.memmap`` and serves
consecutive non-overlapping blocks of ``block_size`` tokens (the tail that does
not fill a block is dropped): a map-style dataset, so SpeechBrain's loaders
shuffle it, shard it across DDP processes and resume it mid-epoch.

Command line (stage 0: ``--data_folder`` only; stage 1: ``--tokenizer`` only;
both: what ``train.py`` does through ``run_on_main``)::

    python -m speechbrain_cald.data.token_blocks --data_folder /data/pile --save_folder exp/data
    python -m speechbrain_cald.data.token_blocks --save_folder exp/data --tokenizer /models/pythia-1b
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from speechbrain_cald.data.text_corpus import (
    SPLITS,
    CorpusFormatError,
    iter_documents,
    prepare_text_corpus,
    read_corpus_manifest,
    source_signature,
    write_corpus_manifest,
)
from speechbrain_cald.files import FolderNotWritable, check_writable
from speechbrain_cald.pretrained import local_source
from speechbrain_cald.files import atomic_write

__all__ = [
    "TokenBlocks",
    "load_tokenizer",
    "prepare_lm_data",
    "shard_paths",
    "tokenize_split",
    "tokenize_splits",
    "tokenizer_signature",
]

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "vocab.txt",
)


def load_tokenizer(source: str):
    """The tokenizer saved in a local checkpoint folder (offline rule)."""
    from transformers import AutoTokenizer

    directory = local_source(source, "tokenizer")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def tokenizer_signature(source: str) -> str:
    """SHA-256 over the tokenizer files of a folder: a changed tokenizer re-tokenises.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "tokenizer.json"), "w") as f:
    ...     _ = f.write("{}")
    >>> len(tokenizer_signature(d))
    64
    """
    directory = local_source(source, "tokenizer")
    digest = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = directory / name
        if path.is_file():
            found = True
            digest.update(name.encode())
            digest.update(path.read_bytes())
    if not found:
        raise FileNotFoundError(
            f"tokenizer folder {directory}: none of {list(TOKENIZER_FILES)} found "
            "(save the tokenizer with tokenizer.save_pretrained(folder))"
        )
    return digest.hexdigest()


def shard_paths(save_folder: str, split: str) -> Dict[str, str]:
    """``{"bin": ..., "meta": ...}`` of a split's token shard."""
    base = os.path.join(save_folder, "tokens", split)
    return {"bin": base + ".bin", "meta": base + ".json"}


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no eos_token: documents are separated by it "
            "(GPT-NeoX's <|endoftext|>); set tokenizer.eos_token and save it again"
        )
    return int(eos)


def tokenize_split(
    split: str,
    save_folder: str,
    tokenizer_source: str,
    batch_documents: int = 256,
    verbose: bool = True,
) -> Dict[str, object]:
    """Tokenise one split's documents into ``<save_folder>/tokens/<split>.bin``.

    Arguments
    ---------
    split : str
        The split whose manifest ``<save_folder>/<split>.csv`` lists the files.
    save_folder : str
        Where the manifests are and the shards go.
    tokenizer_source : str
        A local folder with the checkpoint's tokenizer.
    batch_documents : int
        Documents tokenised per call (speed only).
    verbose : bool
        Print progress and what was skipped.

    Returns
    -------
    dict
        The shard's metadata (also written to ``<split>.json``): ``tokens``,
        ``documents``, ``dtype``, ``eos_id``, ``vocab_size``, ``sources``
        (``[{path, documents, tokens}]``), ``tokenizer`` and ``signature``.
    """
    manifest = os.path.join(save_folder, f"{split}.csv")
    rows = read_corpus_manifest(manifest)
    paths = [r["path"] for r in rows]
    signature = {"sources": source_signature(paths), "tokenizer": tokenizer_signature(tokenizer_source)}
    out = shard_paths(save_folder, split)
    if os.path.isfile(out["meta"]) and os.path.isfile(out["bin"]):
        with open(out["meta"], encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("signature") == signature and os.path.getsize(out["bin"]) == meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            if verbose:
                print(f"tokens of {split}: {out['bin']} matches its sources and tokenizer: skipped")
            return meta
    tokenizer = load_tokenizer(tokenizer_source)
    eos = _eos_id(tokenizer)
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    sources: List[Dict[str, object]] = []
    total = documents = 0
    with atomic_write(out["bin"], "wb") as fout:
        for path in paths:
            n_tok = n_doc = 0
            batch: List[str] = []

            def flush():
                nonlocal n_tok
                if not batch:
                    return
                ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
                flat = np.fromiter(
                    (t for doc in ids for t in (*doc, eos)), dtype=np.int64, count=sum(len(d) + 1 for d in ids)
                )
                fout.write(flat.astype(dtype).tobytes())
                n_tok += len(flat)
                batch.clear()

            for _, text in iter_documents(path):
                if not text.strip():
                    continue
                batch.append(text)
                n_doc += 1
                if len(batch) >= batch_documents:
                    flush()
            flush()
            sources.append({"path": path, "documents": n_doc, "tokens": n_tok})
            total += n_tok
            documents += n_doc
            if verbose:
                print(f"  tokens of {split}: {path}: {n_doc:,} documents -> {n_tok:,} tokens")
    meta = dict(
        split=split, tokens=total, documents=documents, dtype=np.dtype(dtype).name, eos_id=eos,
        vocab_size=vocab, tokenizer=str(local_source(tokenizer_source, "tokenizer")), sources=sources,
        signature=signature,
    )
    with atomic_write(out["meta"]) as f:
        json.dump(meta, f, indent=1)
    for row, source in zip(rows, sources):  # the manifest gets each file's token count
        row["tokens"] = source["tokens"]
    write_corpus_manifest(manifest, rows)
    if verbose:
        print(f"tokens of {split}: {total:,} tokens ({documents:,} documents) -> {out['bin']}")
    return meta


def tokenize_splits(
    save_folder: str, tokenizer_source: str, splits: Sequence[str] = SPLITS, verbose: bool = True
) -> Dict[str, Dict[str, object]]:
    """:func:`tokenize_split` for every split that has a manifest (a missing test is skipped)."""
    done = {}
    for split in splits:
        if not os.path.isfile(os.path.join(save_folder, f"{split}.csv")):
            if split in ("train", "val"):
                raise FileNotFoundError(
                    f"no manifest {save_folder}/{split}.csv: run stage 0 (prepare_text_corpus) first"
                )
            if verbose:
                print(f"tokens of {split}: no manifest {save_folder}/{split}.csv: skipped")
            continue
        done[split] = tokenize_split(split, save_folder, tokenizer_source, verbose=verbose)
    return done


class TokenBlocks(torch.utils.data.Dataset):
    """Fixed-length blocks of a token shard, read lazily from disk.

    Arguments
    ---------
    bin_path : str
        ``<save_folder>/tokens/<split>.bin`` (its ``.json`` beside it).
    block_size : int
        Tokens per block (the training sequence length).
    max_blocks : int, optional
        Use only the first ``max_blocks`` blocks (a quick validation subset).

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> np.arange(10, dtype=np.uint16).tofile(os.path.join(d, "val.bin"))
    >>> with open(os.path.join(d, "val.json"), "w") as f:
    ...     json.dump({"tokens": 10, "dtype": "uint16"}, f)
    >>> blocks = TokenBlocks(os.path.join(d, "val.bin"), block_size=4)
    >>> len(blocks), blocks[1]["tokens"].tolist(), blocks[1]["id"]
    (2, [4, 5, 6, 7], 'block_1')
    """

    def __init__(self, bin_path: str, block_size: int, max_blocks: Optional[int] = None):
        meta_path = bin_path[: -len(".bin")] + ".json" if bin_path.endswith(".bin") else bin_path + ".json"
        if not os.path.isfile(bin_path) or not os.path.isfile(meta_path):
            raise FileNotFoundError(
                f"token shard {bin_path} (+ {meta_path}) does not exist: run stage 1 (tokenize_splits) first"
            )
        with open(meta_path, encoding="utf-8") as f:
            self.meta = json.load(f)
        if block_size < 2:
            raise ValueError(f"TokenBlocks: block_size must be >= 2 (a next-token target), found {block_size}")
        self.bin_path = bin_path
        self.block_size = int(block_size)
        self.tokens = np.memmap(bin_path, dtype=np.dtype(self.meta["dtype"]), mode="r", shape=(int(self.meta["tokens"]),))
        n = len(self.tokens) // self.block_size
        if max_blocks is not None:
            n = min(n, int(max_blocks))
        if n == 0:
            raise ValueError(
                f"token shard {bin_path} has {len(self.tokens):,} tokens, fewer than one block of "
                f"{self.block_size}: use a smaller block_size or more data"
            )
        self.n_blocks = n

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, index: int) -> Dict[str, object]:
        if not 0 <= index < self.n_blocks:
            raise IndexError(f"block {index} out of range [0, {self.n_blocks})")
        start = index * self.block_size
        block = np.asarray(self.tokens[start : start + self.block_size], dtype=np.int64)
        return {"id": f"block_{index}", "tokens": torch.from_numpy(block)}


def prepare_lm_data(
    data_folder: str, save_folder: str, tokenizer_source: str, splits: Sequence[str] = SPLITS, verbose: bool = True
) -> Dict[str, Dict[str, object]]:
    """Stages 0 and 1 of an LM recipe: manifests, then token shards (each skipped when up to date)."""
    prepare_text_corpus(data_folder, save_folder, splits, verbose=verbose)
    return tokenize_splits(save_folder, tokenizer_source, splits, verbose=verbose)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Stages 0 / 1 of an LM recipe: check the corpus and write manifests; tokenise every split."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data_folder", help="corpus root (train/*.jsonl[.zst], val..., test...): writes <split>.csv")
    p.add_argument("--save_folder", required=True, help="an LM recipe's <exp>/data")
    p.add_argument("--tokenizer", help="local folder with the checkpoint's tokenizer: writes tokens/<split>.bin")
    args = p.parse_args(argv)
    if not args.data_folder and not args.tokenizer:
        p.error("give --data_folder (manifests), --tokenizer (token shards) or both")
    try:
        check_writable({"save_folder": args.save_folder})
        if args.data_folder:
            prepare_text_corpus(args.data_folder, args.save_folder)
        if args.tokenizer:
            tokenize_splits(args.save_folder, args.tokenizer)
    except (CorpusFormatError, ValueError, FileNotFoundError, FolderNotWritable) as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    main()
