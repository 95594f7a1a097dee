"""Pieces every corpus preparation shares: missing recordings, index errors, skip-if-done.

A corpus as distributed is an *index* (JSON lines, a split list) naming audio
files. Users often hold only part of the audio (SLURP's real or synthetic
recordings, one VoxCeleb1 zip), so a listed file that is not on disk is
**counted and reported** per split, with the full list written beside the
manifests, never silently dropped; a split with none of its recordings on
disk is an error. A malformed index line is a ``CorpusError`` naming the file
and the line.

A preparation records its options with ``speechbrain_cald.data.prepared``, so
``train.py`` calls it on every run (through ``run_on_main``) and it is skipped
when the manifests were written from the same corpus with the same options;
``file_signature`` puts the index files' size and time among those options.
``prepare_classification_corpus`` is that whole frame for a corpus whose recipe
gives only how to read its index.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import soundfile as sf

from speechbrain_cald.data.labels import UnseenLabelError, check_known_labels
from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.prepared import already_prepared, mark_prepared
from speechbrain_cald.files import FolderNotWritable, check_writable

__all__ = [
    "CorpusError",
    "MissingRecordings",
    "audio_duration",
    "file_signature",
    "find_recording",
    "prepare_classification_corpus",
    "write_classification_manifests",
    "relative_to_root",
    "run_preparation",
]


class CorpusError(ValueError):
    """The corpus on disk is not what the recipe expects; the message names the file (and line)."""


def find_recording(name: str, folders: Sequence[str]) -> Optional[str]:
    """The first ``folder/name`` that exists, or None.

    Arguments
    ---------
    name : str
        The file name (or relative path) the index gives.
    folders : sequence of str
        Where the corpus may keep it, in order of preference.

    Returns
    -------
    str or None

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(d, "b"))
    >>> open(os.path.join(d, "b", "x.flac"), "w").close()
    >>> find_recording("x.flac", [os.path.join(d, "a"), os.path.join(d, "b")]) == os.path.join(d, "b", "x.flac")
    True
    >>> find_recording("y.flac", [os.path.join(d, "b")]) is None
    True
    """
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def audio_duration(path: str) -> float:
    """Duration in seconds from the file header (no decoding).

    Example
    -------
    >>> import tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros(8000), 16000)
    >>> audio_duration(p)
    0.5
    """
    try:
        info = sf.info(path)
    except RuntimeError as err:  # soundfile's error for unreadable files
        raise CorpusError(f"cannot read the audio header of '{path}': {err}") from err
    if info.samplerate <= 0:
        raise CorpusError(f"'{path}': sample rate {info.samplerate} in the header")
    return info.frames / info.samplerate


def relative_to_root(path: str, root: str) -> str:
    """``$data_root/<path relative to root>`` (SpeechBrain's CSV replacement), so manifests move with the corpus.

    Example
    -------
    >>> relative_to_root("/data/slurp/audio/slurp_real/a.flac", "/data/slurp")
    '$data_root/audio/slurp_real/a.flac'
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return "$data_root/" + rel.replace(os.sep, "/")


class MissingRecordings:
    """Recordings an index lists, counted per split as found on disk or missing.

    Arguments
    ---------
    corpus : str
        The corpus name, for messages (``"SLURP"``).
    hint : str
        What to tell a user whose recordings are missing (where the recipe looked).

    Example
    -------
    >>> m = MissingRecordings("toy", hint="looked in /nowhere")
    >>> m.found("train"); m.missing("train", "a.wav", "list.txt line 2")
    >>> m.counts("train")
    (1, 1)
    >>> print(m.summary())
    toy train: 1 of 2 listed recordings on disk, 1 missing (first: a.wav, list.txt line 2); looked in /nowhere
    """

    def __init__(self, corpus: str, hint: str = ""):
        self.corpus = corpus
        self.hint = hint
        self._found: Dict[str, int] = OrderedDict()
        self._missing: Dict[str, List[Tuple[str, str]]] = OrderedDict()

    def _touch(self, split: str) -> None:
        self._found.setdefault(split, 0)
        self._missing.setdefault(split, [])

    def found(self, split: str) -> None:
        """Count one recording of ``split`` that is on disk."""
        self._touch(split)
        self._found[split] += 1

    def missing(self, split: str, name: str, where: str) -> None:
        """Record one listed recording of ``split`` that is not on disk (``where``: index file and line)."""
        self._touch(split)
        self._missing[split].append((name, where))

    def locate(self, split: str, name: str, folders: Sequence[str], where: str) -> Optional[str]:
        """The path of ``name`` in the first of ``folders`` that holds it (counted as found), else None (counted missing)."""
        path = find_recording(name, folders)
        if path is None:
            self.missing(split, name, where)
        else:
            self.found(split)
        return path

    def counts(self, split: str) -> Tuple[int, int]:
        """``(found, missing)`` for ``split``."""
        return self._found.get(split, 0), len(self._missing.get(split, []))

    def missing_of(self, split: str) -> List[Tuple[str, str]]:
        """``[(name, where), ...]`` of the missing recordings of ``split``."""
        return list(self._missing.get(split, []))

    def summary(self) -> str:
        """One line per split that misses recordings (empty when nothing is missing)."""
        lines = []
        for split in self._found:
            found, n_missing = self.counts(split)
            if not n_missing:
                continue
            name, where = self._missing[split][0]
            line = (f"{self.corpus} {split}: {found:,} of {found + n_missing:,} listed recordings on disk, "
                    f"{n_missing:,} missing (first: {name}, {where})")
            lines.append(line + (f"; {self.hint}" if self.hint else ""))
        return "\n".join(lines)

    def write_lists(self, folder: str) -> List[str]:
        """Write ``missing_<split>.txt`` (one ``name<TAB>where`` per line) for each split missing files.

        Stale lists of splits now complete are removed. Returns the paths written.
        """
        written = []
        for split in self._found:
            path = os.path.join(folder, f"missing_{split}.txt")
            if self._missing[split]:
                os.makedirs(folder, exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    for name, where in self._missing[split]:
                        f.write(f"{name}\t{where}\n")
                written.append(path)
            elif os.path.exists(path):
                os.remove(path)
        return written

    def report(self, folder: Optional[str] = None, required: Iterable[str] = ()) -> str:
        """Print the summary (and write the lists into ``folder``); error for a required split with nothing on disk.

        Arguments
        ---------
        folder : str, optional
            Where ``missing_<split>.txt`` go.
        required : iterable of str
            Splits that must keep at least one recording.

        Returns
        -------
        str
            The summary printed.
        """
        for split in required:
            found, n_missing = self.counts(split)
            if found == 0:
                what = (f"none of its {n_missing:,} listed recordings is on disk (first: "
                        f"{self._missing[split][0][0]}, {self._missing[split][0][1]})") if n_missing else "it lists no recording"
                raise CorpusError(f"{self.corpus} {split}: {what}" + (f"; {self.hint}" if self.hint else ""))
        text = self.summary()
        if text:
            lists = self.write_lists(folder) if folder else []
            print(text + (f"\nfull lists: {', '.join(lists)}" if lists else ""), flush=True)
        elif folder:
            self.write_lists(folder)
        return text


def file_signature(path: str) -> Optional[List[float]]:
    """``[size, mtime]`` of an index file (None if absent): what a stamp compares."""
    if not os.path.exists(path):
        return None
    st = os.stat(path)
    return [st.st_size, round(st.st_mtime, 3)]


def write_classification_manifests(
    save_folder: str,
    rows: Mapping[str, List[Dict[str, object]]],
    fields: Sequence[str],
    train_splits: Sequence[str],
    missing: MissingRecordings,
    required: Sequence[str],
    label_column: str = "label",
) -> Dict[str, str]:
    """The end of an utterance-classification preparation: report, check labels, write manifests.

    Arguments
    ---------
    save_folder : str
        Where ``<split>.csv`` go.
    rows : dict
        split -> manifest rows (dicts with ``fields`` and ``"where"``, the index
        file and line of the record, used in error messages only).
    fields : sequence of str
        Manifest columns (``ID`` first).
    train_splits : sequence of str
        The splits whose labels make the label set.
    missing : MissingRecordings
        The recordings counted while collecting ``rows``; reported here (lists
        written into ``save_folder``).
    required : sequence of str
        Splits that must keep at least one recording.
    label_column : str
        The label field.

    Returns
    -------
    dict
        split -> CSV path.
    """
    missing.report(save_folder, required=required)
    known = {row[label_column] for split in train_splits for row in rows.get(split, [])}
    train_what = "the training split (" + " + ".join(train_splits) + ")"
    for split, split_rows in rows.items():
        if split not in train_splits:
            check_known_labels(((r[label_column], r["where"]) for r in split_rows), known, split, train_what)
    paths = {}
    for split, split_rows in rows.items():
        seen: Dict[object, str] = {}
        for row in split_rows:
            if row["ID"] in seen:
                raise CorpusError(f"{missing.corpus} {split}: utterance ID '{row['ID']}' of {row['where']} "
                                  f"repeats the one of {seen[row['ID']]}")
            seen[row["ID"]] = row["where"]
        paths[split] = os.path.join(save_folder, f"{split}.csv")
        write_manifest(paths[split], split_rows, fields=fields)
    counts = ", ".join(f"{split} {len(split_rows):,}" for split, split_rows in rows.items())
    print(f"{missing.corpus}: {len(known):,} labels in {train_what}; utterances: {counts} -> {save_folder}", flush=True)
    return paths


def prepare_classification_corpus(
    corpus: str,
    data_folder: str,
    save_folder: str,
    splits: Sequence[str],
    options: Callable[[], Mapping[str, Any]],
    read: Callable[[MissingRecordings], Mapping[str, List[Dict[str, object]]]],
    fields: Sequence[str],
    train_splits: Sequence[str],
    required: Sequence[str],
    hint: str = "",
    skip_prep: bool = False,
) -> Dict[str, str]:
    """An utterance-classification preparation (SLURP, VoxCeleb1): skipped when current, else read, check, write.

    Arguments
    ---------
    corpus : str
        The corpus name (messages; ``<corpus lower-case>_options.json`` records the options).
    data_folder, save_folder : str
        The corpus root as distributed; where ``<split>.csv`` go.
    splits : sequence of str
        The manifests written.
    options : callable
        ``() -> dict``: what the manifests depend on besides the corpus path (a
        version, the index files' :func:`file_signature`); called once the corpus
        folder is known to exist. The preparation is skipped while these and the
        manifests are unchanged.
    read : callable
        ``(MissingRecordings) -> {split: rows}``: the manifest rows, counting listed
        recordings found or missing (see :func:`write_classification_manifests`).
    fields, train_splits, required
        As for :func:`write_classification_manifests`.
    hint : str
        Where the recordings were looked for (said when some are missing).
    skip_prep : bool
        Only return the paths (the manifests are there).

    Returns
    -------
    dict
        split -> manifest path.
    """
    paths = {split: os.path.join(save_folder, f"{split}.csv") for split in splits}
    if skip_prep:
        return paths
    if not os.path.isdir(data_folder):
        raise CorpusError(f"{corpus}: data_folder '{data_folder}' is not a folder")
    recorded = {"corpus": corpus, "data_folder": os.path.abspath(data_folder), **options()}
    name = corpus.lower()
    if already_prepared(save_folder, name, recorded, paths.values()):
        print(f"{corpus} manifests in {save_folder} are up to date (same corpus and options): skipped")
        return paths
    missing = MissingRecordings(corpus, hint=hint)
    written = write_classification_manifests(save_folder, read(missing), fields, train_splits, missing, required)
    mark_prepared(save_folder, name, recorded)
    return written


def run_preparation(prepare: Callable[..., Dict[str, str]], **kwargs) -> int:
    """Run a preparation from a command line: exit code 0, or 1 with the corpus error on one stderr line.

    Example
    -------
    >>> def broken(data_folder):
    ...     raise CorpusError(f"{data_folder}: no index")
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     code = run_preparation(broken, data_folder="/data")
    >>> code, err.getvalue()
    (1, 'prepare.py: /data: no index\\n')
    """
    try:
        if kwargs.get("save_folder"):
            check_writable({"save_folder": kwargs["save_folder"]})
        prepare(**kwargs)
    except (CorpusError, UnseenLabelError, FolderNotWritable) as err:
        print(f"prepare.py: {err}", file=sys.stderr)
        return 1
    return 0
