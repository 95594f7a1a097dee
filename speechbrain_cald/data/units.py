"""Character units for CTC: a SpeechBrain ``CTCTextEncoder`` built from manifests.

Index 0 is the CTC blank; the characters follow in sorted order, so the same
transcripts always give the same file.
"""

from __future__ import annotations

import argparse
import os
from typing import Iterable, List

from speechbrain.dataio.encoder import CTCTextEncoder

from .manifest import read_manifest

__all__ = ["build_char_units", "load_char_units"]


LETTERS = " abcdefghijklmnopqrstuvwxyz"


def build_char_units(manifests: Iterable[str], path: str, field: str = "wrd", alphabet: str = LETTERS) -> CTCTextEncoder:
    """Build the character inventory of ``field`` over ``manifests`` and save it to ``path``.

    The inventory always holds ``alphabet``, so that a small training set
    (a smoke test) gives the same units as the full one.

    Arguments
    ---------
    manifests : iterable of str
        SpeechBrain CSV files (normally the training split only).
    path : str
        Output file (SpeechBrain's label-encoder text format).
    field : str
        The transcript column.
    alphabet : str
        Characters included even when the transcripts lack them.

    Returns
    -------
    CTCTextEncoder
        Blank at index 0, then the sorted characters.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_cald.data.manifest import write_manifest
    >>> d = tempfile.mkdtemp()
    >>> _ = write_manifest(os.path.join(d, "t.csv"), [dict(ID="a", duration=1, wav="x", spk_id="s", wrd="ba ab")])
    >>> enc = build_char_units([os.path.join(d, "t.csv")], os.path.join(d, "units.txt"), alphabet="")
    >>> len(enc), enc.encode_sequence(list("ab"))
    (4, [2, 3])
    >>> len(build_char_units([os.path.join(d, "t.csv")], os.path.join(d, "units.txt")))
    28
    """
    chars = set(alphabet)
    for manifest in manifests:
        rows = read_manifest(manifest)
        if rows and field not in rows[0]:
            raise KeyError(f"{manifest} has no column '{field}'; columns: {sorted(rows[0])}")
        for row in rows:
            chars.update(row[field])
    encoder = CTCTextEncoder()
    encoder.insert_blank(index=0)
    encoder.update_from_iterable(sorted(chars), sequence_input=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    encoder.save(path)
    return encoder


def load_char_units(path: str) -> CTCTextEncoder:
    """Load units saved by :func:`build_char_units` (clear error when missing).

    Arguments
    ---------
    path : str
        The label-encoder file.

    Returns
    -------
    CTCTextEncoder
        The encoder.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"character units '{path}' do not exist: run the units stage (stage 1) first")
    encoder = CTCTextEncoder()
    encoder.load(path)
    return encoder


def main(argv: List[str] = None) -> None:
    """``python -m speechbrain_cald.data.units OUT.txt TRAIN.csv [MORE.csv ...]``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args(argv)
    encoder = build_char_units(args.manifests, args.out)
    print(f"{len(encoder)} units (blank + {len(encoder) - 1} characters) -> {args.out}")


if __name__ == "__main__":
    main()
