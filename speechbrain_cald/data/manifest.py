"""SpeechBrain CSV manifests: one row per utterance, ``ID, duration, wav, spk_id, wrd``
for ASR (``MANIFEST_FIELDS``), or any columns a task needs (``fields=``, e.g.
``ID, duration, wav, label`` for utterance classification).

Paths are written relative to ``$data_root`` (SpeechBrain's CSV replacement
syntax), so a manifest does not depend on where the corpus lives and the same
corpus gives the same bytes wherever it is generated.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, Iterable, List, Sequence

__all__ = ["MANIFEST_FIELDS", "write_manifest", "read_manifest"]

MANIFEST_FIELDS = ["ID", "duration", "wav", "spk_id", "wrd"]


def write_manifest(path: str, rows: Iterable[Dict[str, object]], fields: Sequence[str] = MANIFEST_FIELDS) -> int:
    """Write a SpeechBrain CSV manifest.

    Arguments
    ---------
    path : str
        Output CSV file (its folder is created).
    rows : iterable of dict
        Each with the keys of ``fields``; ``duration`` in seconds
        (written with 3 decimals), ``wav`` e.g. ``$data_root/wav/test/x.wav``.
    fields : sequence of str
        The columns, in order (default ``MANIFEST_FIELDS``, the ASR columns; e.g. with
        ``start``, ``stop`` for segments of longer recordings); SpeechBrain needs ``ID`` first.

    Returns
    -------
    int
        The number of rows written.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.csv")
    >>> write_manifest(p, [dict(ID="u1", duration=1.5, wav="$data_root/u1.wav", spk_id="s", wrd="hi")])
    1
    >>> read_manifest(p)[0]["duration"]
    '1.500'
    >>> write_manifest(p, [dict(ID="u1", duration=2, wav="$data_root/u1.wav", label="alarm_set")],
    ...                fields=["ID", "duration", "wav", "label"])
    1
    >>> read_manifest(p)[0]["label"]
    'alarm_set'
    """
    fields = list(fields)
    if not fields or fields[0] != "ID":
        raise ValueError(f"manifest {path}: the first column must be ID (SpeechBrain's key), got {fields}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            missing = [k for k in fields if k not in row]
            if missing:
                raise KeyError(f"manifest row for {path} lacks {missing}; expected keys {fields}, got {sorted(row)}")
            out = {k: row[k] for k in fields}
            if "duration" in out:
                out["duration"] = f"{float(row['duration']):.3f}"
            writer.writerow(out)
            n += 1
    return n


def read_manifest(path: str) -> List[Dict[str, str]]:
    """Read a manifest written by :func:`write_manifest` (rows as dicts of str).

    Arguments
    ---------
    path : str
        The CSV file.

    Returns
    -------
    list of dict
        One dict per row, keyed by the CSV header.
    """
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
