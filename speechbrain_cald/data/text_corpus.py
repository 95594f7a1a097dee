"""Text corpora for language modelling: the Pile's JSON-lines layout, read as a stream.

Layout (the Pile as distributed, or any corpus written the same way)::

    <data_folder>/train/*.jsonl | *.jsonl.zst | *.txt     one or more files
    <data_folder>/val.jsonl | val.jsonl.zst | val.txt     exactly one
    <data_folder>/test.jsonl | test.jsonl.zst | test.txt  optional

Formats:

- ``.jsonl`` / ``.jsonl.zst`` (zstandard-compressed, as the Pile ships): one
  document per line, a JSON object with a string field ``"text"`` (other fields,
  e.g. the Pile's ``"meta"``, are ignored). Blank lines are skipped.
- ``.txt``: plain UTF-8 text; documents are separated by one or more blank lines.

A malformed line (not JSON, not an object, no string ``"text"``, not UTF-8,
a broken zstd frame) is a :class:`CorpusFormatError` naming the file and line,
and so is a ``.zst`` file cut short (it ends inside a frame: "truncated").
Files are read line by line (zstd decompressed as a stream), so a corpus larger
than memory is fine.

Stage 0 of an LM recipe (:func:`prepare_text_corpus`) reads every file once,
checks every line, and writes one SpeechBrain-style CSV manifest per split,
``<save_folder>/<split>.csv``, with one row per source file::

    ID, path, format, bytes, documents, characters[, tokens]

(``path`` is absolute; ``documents`` counts non-empty documents, and empty
ones are reported with their lines as a warning; ``tokens``,
the file's tokens with one end-of-text per document, is added by stage 1's
tokenisation, :mod:`speechbrain_cald.data.token_blocks`). The manifest is
skipped when its sources (paths, sizes, modification times) are unchanged.

Command line: ``python -m speechbrain_cald.data.token_blocks --data_folder D --save_folder S``.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
from typing import Dict, Iterator, List, Sequence, Tuple

from speechbrain_cald.data.utf8 import decode_utf8
from speechbrain_cald.files import atomic_write

__all__ = [
    "CorpusFormatError",
    "FORMATS",
    "MANIFEST_FIELDS",
    "SPLITS",
    "find_split_files",
    "iter_documents",
    "iter_json_objects",
    "prepare_text_corpus",
    "read_corpus_manifest",
    "source_signature",
    "write_corpus_manifest",
]

logger = logging.getLogger(__name__)

# file suffix -> format name (longest suffix first when matching)
FORMATS = {".jsonl.zst": "jsonl.zst", ".jsonl": "jsonl", ".txt": "txt"}
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
MANIFEST_FIELDS = ["ID", "path", "format", "bytes", "documents", "characters"]
TOKENS_FIELD = "tokens"  # added by the tokenisation (stage 1)
SIGNATURE_FILE = "corpus_signature.json"


class CorpusFormatError(ValueError):
    """A line of a corpus file that is not a document (the message names file and line)."""


def file_format(path: str) -> str:
    """The format of ``path`` from its suffix.

    Example
    -------
    >>> file_format("train/00.jsonl.zst"), file_format("val.txt")
    ('jsonl.zst', 'txt')
    """
    for suffix, name in FORMATS.items():
        if path.endswith(suffix):
            return name
    raise CorpusFormatError(f"{path}: unknown corpus file type; expected one of {sorted(FORMATS)}")


class _TruncatedStream(Exception):
    """The compressed file ends inside a zstd frame."""


class _ZstdStream(io.RawIOBase):
    """The decompressed bytes of a ``.zst`` file (one or more frames), refusing a file cut short.

    zstandard's ``stream_reader`` ends quietly where the file ends, so a corpus
    file cut inside a frame (an interrupted download) lost its tail silently.
    """

    def __init__(self, path: str):
        import zstandard

        self._file = open(path, "rb")
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._frame = self._new_frame()
        self._in_frame = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._in_frame = True
            out.append(self._frame.decompress(data))
            data = b""
            if self._frame.eof:  # the next frame, if any, starts in unused_data
                data, self._frame, self._in_frame = self._frame.unused_data, self._new_frame(), False
        return b"".join(out)

    def readinto(self, buffer) -> int:
        while not self._pending:
            raw = self._file.read(1 << 16)
            if not raw:
                if self._in_frame:
                    raise _TruncatedStream()
                return 0
            self._pending = self._decompress(raw)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_binary(path: str):
    """A binary stream of ``path``, zstd decompressed on the fly for ``.zst``."""
    if path.endswith(".zst"):
        try:
            import zstandard  # noqa: F401
        except ImportError as err:  # pragma: no cover - pinned in requirements.txt
            raise ImportError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from err
        return io.BufferedReader(_ZstdStream(path))
    return open(path, "rb")


def _lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a text file; decoding errors name the line.

    Lines are split on ``\\n`` in bytes and decoded one at a time (strict
    UTF-8), so an error names the line it is on.
    """
    lineno = 0
    with _open_binary(path) as f:
        while True:
            try:
                raw = f.readline()
            except _TruncatedStream:
                raise CorpusFormatError(
                    f"{path}:{lineno + 1}: truncated: the file ends inside a zstd frame ({os.path.getsize(path):,} "
                    "bytes); an interrupted download or copy? Compare it with the published checksum"
                ) from None
            except Exception as err:  # zstd frame errors
                if "zstd" in type(err).__module__ or "zstd" in str(err).lower():
                    raise CorpusFormatError(
                        f"{path}:{lineno + 1}: cannot decompress at or after this line ({err})"
                    ) from None
                raise
            if not raw:
                return
            lineno += 1
            yield lineno, decode_utf8(raw, path, lineno, CorpusFormatError)


def iter_json_objects(path: str) -> Iterator[Tuple[int, dict]]:
    """``(line number, object)`` per non-blank line of a JSON-lines file (``.jsonl`` / ``.jsonl.zst``).

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "tasks.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"a": 1}\\n[2]\\n')
    >>> objects = iter_json_objects(p)
    >>> next(objects)
    (1, {'a': 1})
    >>> next(objects)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.text_corpus.CorpusFormatError: ...tasks.jsonl:2: expected a JSON object, found list
    """
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(
                f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}): {line.strip()[:80]!r}"
            ) from None
        if not isinstance(obj, dict):
            raise CorpusFormatError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}")
        yield lineno, obj


def _json_documents(path: str) -> Iterator[Tuple[int, str]]:
    for lineno, obj in iter_json_objects(path):
        if "text" not in obj:
            raise CorpusFormatError(f"{path}:{lineno}: expected a JSON object with a \"text\" field, found {sorted(obj)}")
        text = obj["text"]
        if not isinstance(text, str):
            raise CorpusFormatError(
                f"{path}:{lineno}: \"text\" should be a string, found {type(text).__name__}"
            )
        yield lineno, text


def _text_documents(path: str) -> Iterator[Tuple[int, str]]:
    start, lines = 0, []
    for lineno, line in _lines(path):
        if line.strip():
            if not lines:
                start = lineno
            lines.append(line.rstrip("\n"))
        elif lines:
            yield start, "\n".join(lines)
            lines = []
    if lines:
        yield start, "\n".join(lines)


def iter_documents(path: str) -> Iterator[Tuple[int, str]]:
    """Stream the documents of one corpus file as ``(line number, text)``.

    Arguments
    ---------
    path : str
        A ``.jsonl``, ``.jsonl.zst`` or ``.txt`` file.

    Yields
    ------
    (int, str)
        The (first) line number of the document and its text.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "val.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"text": "one"}\\n\\n{"text": "two", "meta": {}}\\n{"txt": 3}\\n')
    >>> docs = iter_documents(p)
    >>> next(docs), next(docs)
    ((1, 'one'), (3, 'two'))
    >>> next(docs)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.text_corpus.CorpusFormatError: ...val.jsonl:4: expected a JSON object with a "text" field, found ['txt']
    """
    fmt = file_format(path)
    return _text_documents(path) if fmt == "txt" else _json_documents(path)


def _split_candidates(data_folder: str, split: str) -> List[str]:
    if split == "train":
        found = [p for suffix in FORMATS for p in glob.glob(os.path.join(data_folder, "train", "*" + suffix))]
    else:
        found = [os.path.join(data_folder, split + suffix) for suffix in FORMATS]
        found = [p for p in found if os.path.isfile(p)]
    return sorted(set(found))


def find_split_files(data_folder: str, splits: Sequence[str] = SPLITS) -> Dict[str, List[str]]:
    """The corpus files of each split (absolute paths, sorted).

    Arguments
    ---------
    data_folder : str
        The corpus root (see the module docstring for the layout).
    splits : sequence of str
        Which splits to look for; ``train`` and ``val`` are required, a missing
        ``test`` gives an empty list.

    Returns
    -------
    dict
        Split name -> list of files.
    """
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"corpus folder '{data_folder}' does not exist (--data_folder)")
    data_folder = os.path.abspath(data_folder)
    files = {split: _split_candidates(data_folder, split) for split in splits}
    for split in splits:
        if split != "train" and len(files[split]) > 1:
            raise ValueError(
                f"corpus folder '{data_folder}': split '{split}' has several files {files[split]}; keep one"
            )
        if split in REQUIRED_SPLITS and not files[split]:
            want = (
                f"{data_folder}/train/*.jsonl, *.jsonl.zst or *.txt"
                if split == "train"
                else f"{data_folder}/{split}.jsonl, {split}.jsonl.zst or {split}.txt"
            )
            present = sorted(os.listdir(data_folder))[:20]
            raise FileNotFoundError(
                f"corpus folder '{data_folder}': no {split} split; expected {want} (the Pile's layout); "
                f"found {present}"
            )
    return files


def source_signature(paths: Sequence[str]) -> List[List[object]]:
    """``[[path, size, mtime_ns], ...]``: what decides whether outputs are stale.

    Example
    -------
    >>> source_signature([__file__])[0][0] == __file__
    True
    """
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([p, st.st_size, st.st_mtime_ns])
    return out


def _file_row(path: str) -> Tuple[Dict[str, object], List[int]]:
    """The manifest row of one file, and the lines of its empty documents (skipped, as tokenisation skips them)."""
    documents = characters = 0
    empty = []
    for lineno, text in iter_documents(path):
        if text.strip():
            documents += 1
            characters += len(text)
        else:
            empty.append(lineno)
    name = os.path.basename(path)
    for suffix in FORMATS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return dict(
        ID=name, path=path, format=file_format(path), bytes=os.path.getsize(path),
        documents=documents, characters=characters,
    ), empty


def prepare_text_corpus(
    data_folder: str, save_folder: str, splits: Sequence[str] = SPLITS, verbose: bool = True
) -> Dict[str, str]:
    """Check every line of the corpus and write ``<save_folder>/<split>.csv``.

    Arguments
    ---------
    data_folder : str
        The corpus root (the Pile's layout, see the module docstring).
    save_folder : str
        Where the manifests go (an LM recipe's ``<exp>/data``).
    splits : sequence of str
        Splits to prepare (a missing ``test`` is skipped with a message).
    verbose : bool
        Print what was done or skipped.

    Returns
    -------
    dict
        Split name -> manifest path (splits that exist only).

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(f"{root}/train")
    >>> for name in ("train/00.jsonl", "val.jsonl"):
    ...     with open(f"{root}/{name}", "w") as f:
    ...         _ = f.write('{"text": "a b"}\\n{"text": "c"}\\n')
    >>> out = prepare_text_corpus(root, f"{root}/exp/data", verbose=False)
    >>> sorted(out), read_corpus_manifest(out["train"])[0]["documents"]
    (['train', 'val'], '2')
    """
    files = find_split_files(data_folder, splits)
    signature = {"data_folder": os.path.abspath(data_folder), "splits": {s: source_signature(f) for s, f in files.items()}}
    sig_path = os.path.join(save_folder, SIGNATURE_FILE)
    manifests = {s: os.path.join(save_folder, f"{s}.csv") for s, f in files.items() if f}
    if os.path.isfile(sig_path) and all(os.path.isfile(p) for p in manifests.values()):
        with open(sig_path, encoding="utf-8") as f:
            if json.load(f) == signature:
                if verbose:
                    print(f"corpus manifests in {save_folder} match {data_folder}: skipped")
                return manifests
    os.makedirs(save_folder, exist_ok=True)
    for split, paths in files.items():
        if not paths:
            if verbose:
                print(f"corpus: no {split} split in {data_folder} ({split}.jsonl[.zst] / {split}.txt): skipped")
            continue
        rows = []
        for path in paths:
            row, empty = _file_row(path)
            rows.append(row)
            if verbose:
                print(f"  {split}: {path}: {row['documents']:,} documents, {row['characters']:,} characters")
            if empty:
                more = " ..." if len(empty) > 10 else ""
                logger.warning(
                    "corpus %s: %s: %d of %d documents are empty (\"text\" empty or blank), skipped: lines %s%s",
                    split, path, len(empty), len(empty) + row["documents"], ", ".join(map(str, empty[:10])), more,
                )
        if not any(r["documents"] for r in rows):
            raise CorpusFormatError(f"corpus split '{split}' ({paths}) holds no non-empty document")
        write_corpus_manifest(manifests[split], rows)
    with atomic_write(sig_path) as f:
        json.dump(signature, f, indent=1)
    if verbose:
        print(f"corpus manifests -> {', '.join(manifests.values())}")
    return manifests


def write_corpus_manifest(path: str, rows: Sequence[Dict[str, object]]) -> None:
    """Write manifest rows atomically (with the ``tokens`` column when the rows have it)."""
    fields = MANIFEST_FIELDS + ([TOKENS_FIELD] if rows and TOKENS_FIELD in rows[0] else [])
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_corpus_manifest(path: str) -> List[Dict[str, str]]:
    """The rows of a manifest written by :func:`prepare_text_corpus`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus manifest '{path}' does not exist (run stage 0: prepare_text_corpus)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and set(MANIFEST_FIELDS) - set(rows[0]):
        raise ValueError(f"corpus manifest '{path}': expected columns {MANIFEST_FIELDS}, found {sorted(rows[0])}")
    return rows
