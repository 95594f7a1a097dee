"""CTC output tokens of ASR recipes: characters (default) or SentencePiece unigram pieces.

Both kinds answer the same questions, so the recipe, the evaluation, the LM
decoders and the exported inference folder never ask which one they have:

- ``encode(text) -> list of int`` and ``decode(ids) -> str``;
- ``labels``: the string of each output index (characters with ``" "`` as the
  word separator; pieces with SentencePiece's ``"▁"`` word-start mark), which
  the LM beam searches read;
- ``blank_index`` (0 for both; for pieces it is SentencePiece's ``<unk>`` id,
  SpeechBrain's CTC convention) and ``len``.

``build_tokens(folder, kind, train_csv, ...)`` trains and saves them
(``tokens.json`` says which kind and file; a second call with the same options
keeps what is there); ``load_tokens(folder)`` reads them back.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, List, Optional

from speechbrain.dataio.encoder import CTCTextEncoder

from speechbrain_cald.data.units import build_char_units, load_char_units
from speechbrain_cald.files import atomic_write

__all__ = ["CharTokens", "PieceTokens", "TOKEN_TYPES", "build_tokens", "load_tokens"]

TOKEN_TYPES = ("char", "unigram")
SPM_SPACE = "\u2581"  # SentencePiece's word-start mark


class CharTokens:
    """Characters of a SpeechBrain ``CTCTextEncoder`` (blank at 0, then sorted characters).

    Example
    -------
    >>> enc = CTCTextEncoder()
    >>> enc.insert_blank(index=0)
    >>> enc.update_from_iterable(list(" ab"), sequence_input=False)
    >>> tok = CharTokens(enc)
    >>> tok.encode("ab a"), tok.decode([2, 3, 1, 2]), tok.labels, len(tok)
    ([2, 3, 1, 2], 'ab a', ['<blank>', ' ', 'a', 'b'], 4)
    """

    kind = "char"
    space = " "

    def __init__(self, encoder: CTCTextEncoder, path: Optional[str] = None):
        self.encoder = encoder
        self.path = path
        self.labels: List[str] = [encoder.ind2lab[i] for i in range(len(encoder.ind2lab))]
        self.blank_index = encoder.lab2ind[encoder.blank_label]
        if self.space not in encoder.lab2ind:
            raise ValueError(f"character tokens {path or ''}: no space among the labels, so words cannot be told apart")

    def encode(self, text: str) -> List[int]:
        unknown = sorted({c for c in text if c not in self.encoder.lab2ind})
        if unknown:
            raise KeyError(f"character tokens {self.path or ''}: {unknown} not in the inventory (text {text!r})")
        return [self.encoder.lab2ind[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join("".join(self.labels[int(i)] for i in ids).split())

    def __len__(self) -> int:
        return len(self.labels)


class PieceTokens:
    """SentencePiece pieces (a ``.model`` file trained by SpeechBrain's ``SentencePiece`` wrapper).

    Arguments
    ---------
    model_file : str
        The SentencePiece ``.model``.
    """

    kind = "unigram"
    space = SPM_SPACE

    def __init__(self, model_file: str):
        import sentencepiece as spm

        if not os.path.exists(model_file):
            raise FileNotFoundError(f"SentencePiece model '{model_file}' does not exist: run the tokens stage (stage 1)")
        self.path = model_file
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.labels = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self.blank_index = self.sp.unk_id()
        if self.blank_index != 0:
            raise ValueError(f"{model_file}: <unk> id is {self.blank_index}; the CTC blank convention needs 0 (unk_id=0)")

    def encode(self, text: str) -> List[int]:
        return list(self.sp.encode_as_ids(text))

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.sp.decode_ids([int(i) for i in ids if int(i) != self.blank_index]).split())

    def __len__(self) -> int:
        return len(self.labels)


def build_tokens(
    folder: str,
    kind: str,
    train_csv: str,
    vocab_size: int = 0,
    alphabet: str = "",
    field: str = "wrd",
):
    """Train the tokens of ``kind`` on ``train_csv`` into ``folder`` (kept when already there with these options).

    Arguments
    ---------
    folder : str
        Output folder (``tokens.json`` + ``units.txt`` or ``<vocab>_unigram.model``).
    kind : str
        ``"char"`` or ``"unigram"``.
    train_csv : str
        The training manifest.
    vocab_size : int
        Pieces for ``unigram`` (blank / ``<unk>`` included).
    alphabet : str
        Characters always in a character inventory (``char``).
    field : str
        The transcript column.

    Returns
    -------
    CharTokens or PieceTokens
    """
    if kind not in TOKEN_TYPES:
        raise ValueError(f"token_type '{kind}': expected one of {TOKEN_TYPES}")
    os.makedirs(folder, exist_ok=True)
    opts = {"kind": kind, "train_csv": os.path.abspath(train_csv), "vocab_size": int(vocab_size) if kind == "unigram" else 0,
            "alphabet": alphabet if kind == "char" else "", "field": field}
    meta_path = os.path.join(folder, "tokens.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("options") == opts and os.path.exists(os.path.join(folder, meta["file"])):
            print(f"tokens: {folder} already holds {kind} tokens for these options; kept")
            return load_tokens(folder)
    if kind == "char":
        file = "units.txt"
        build_char_units([train_csv], os.path.join(folder, file), field=field, alphabet=alphabet)
    else:
        from speechbrain.tokenizers.SentencePiece import SentencePiece

        if vocab_size < 2:
            raise ValueError(f"token_type unigram needs vocab_size >= 2, got {vocab_size}")
        file = f"{vocab_size}_unigram.model"
        for stale in (file, f"{vocab_size}_unigram.vocab"):  # other options: train again
            if os.path.exists(os.path.join(folder, stale)):
                os.remove(os.path.join(folder, stale))
        SentencePiece(model_dir=folder, vocab_size=vocab_size, annotation_train=train_csv, annotation_read=field,
                      model_type="unigram", character_coverage=1.0, unk_id=0, annotation_format="csv")
    with atomic_write(meta_path) as f:
        json.dump({"kind": kind, "file": file, "options": opts}, f, indent=1)
    tokens = load_tokens(folder)
    print(f"tokens: {len(tokens)} {kind} tokens (blank included) -> {os.path.join(folder, file)}")
    return tokens


def load_tokens(folder: str):
    """The tokens :func:`build_tokens` saved in ``folder``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_cald.data.manifest import write_manifest
    >>> d = tempfile.mkdtemp()
    >>> _ = write_manifest(os.path.join(d, "t.csv"), [dict(ID="a", duration=1, wav="x", spk_id="s", wrd="ab ba")])
    >>> tok = build_tokens(os.path.join(d, "tok"), "char", os.path.join(d, "t.csv"))  # doctest: +ELLIPSIS
    tokens: 4 char tokens (blank included) -> ...units.txt
    >>> load_tokens(os.path.join(d, "tok")).labels
    ['<blank>', ' ', 'a', 'b']
    """
    meta_path = os.path.join(folder, "tokens.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"tokens folder '{folder}' has no tokens.json: run the tokens stage (stage 1) first")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    path = os.path.join(folder, meta["file"])
    if meta["kind"] == "char":
        return CharTokens(load_char_units(path), path)
    return PieceTokens(path)
