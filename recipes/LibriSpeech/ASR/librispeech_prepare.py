#!/usr/bin/env python3
"""Stage 0 of the LibriSpeech recipe: one SpeechBrain manifest per split, from the corpus as distributed.

The corpus root (``--data_folder``, the ``LibriSpeech`` folder of the
openslr archives) holds one folder per split,
``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``, and one
``<speaker>-<chapter>.trans.txt`` per chapter with ``<utt id> UPPER CASE WORDS``
lines. Each split becomes ``<save_folder>/<split>.csv`` (``ID, duration, wav,
spk_id, wrd``; ``wav`` relative to ``$data_root``), sorted by ID, transcripts as
distributed (upper case, apostrophes kept). What does not fit is reported by
file name: a missing split folder is an error; a transcript line whose audio
is missing, an audio file no transcript line names and an empty transcript
are skipped with a counted warning.

    python librispeech_prepare.py /data/LibriSpeech results/data --train_splits train-clean-100 \
        --dev_splits dev-clean --test_splits test-clean test-other
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from speechbrain_cald.data.audio import audio_info
from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.prepared import already_prepared, mark_prepared
from speechbrain_cald.data.utf8 import utf8_lines

OFFICIAL_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
                   "test-clean", "test-other")


def _split_folder(data_folder: str, split: str) -> str:
    folder = os.path.join(data_folder, split)
    if os.path.isdir(folder):
        return folder
    if os.path.isdir(os.path.join(data_folder, "LibriSpeech", split)):
        raise FileNotFoundError(
            f"LibriSpeech split folder '{folder}' does not exist, but {os.path.join(data_folder, 'LibriSpeech', split)} "
            f"does: pass --data_folder={os.path.join(data_folder, 'LibriSpeech')}")
    present = sorted(d for d in os.listdir(data_folder) if os.path.isdir(os.path.join(data_folder, d))) \
        if os.path.isdir(data_folder) else []
    raise FileNotFoundError(
        f"LibriSpeech split folder '{folder}' does not exist (data_folder {data_folder} holds: "
        f"{', '.join(present) or 'nothing'}); splits are named as distributed: {', '.join(OFFICIAL_SPLITS)}")


class _Problems:
    """Counted warnings per kind, with the first few file names shown."""

    def __init__(self, split: str, shown: int = 5):
        self.split, self.shown, self.items = split, shown, {}

    def add(self, kind: str, where: str) -> None:
        self.items.setdefault(kind, []).append(where)

    def report(self) -> None:
        for kind, where in self.items.items():
            more = f" (and {len(where) - self.shown} more)" if len(where) > self.shown else ""
            print(f"WARNING: LibriSpeech {self.split}: {len(where)} {kind}, skipped: "
                  + "; ".join(where[:self.shown]) + more, file=sys.stderr)


def split_rows(data_folder: str, split: str) -> List[Dict[str, object]]:
    """The manifest rows of one split (problems reported on stderr)."""
    root = _split_folder(data_folder, split)
    problems = _Problems(split)
    rows = []
    for folder, _dirs, files in sorted(os.walk(root)):
        flacs = {f[:-5] for f in files if f.endswith(".flac")}
        named = set()
        for trans in sorted(f for f in files if f.endswith(".trans.txt")):
            path = os.path.join(folder, trans)
            for number, line in utf8_lines(path):
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                named.add(utt_id)
                words = " ".join(text.split())
                if not words:
                    problems.add("empty transcripts", f"{path}:{number} ({utt_id})")
                    continue
                if utt_id not in flacs:
                    problems.add("transcript lines without audio", f"{path}:{number} ({utt_id}.flac missing)")
                    continue
                audio = os.path.join(folder, utt_id + ".flac")
                rows.append(dict(ID=utt_id, duration=audio_info(audio).duration,
                                 wav="$data_root/" + os.path.relpath(audio, data_folder).replace(os.sep, "/"),
                                 spk_id=utt_id.split("-")[0], wrd=words))
        for orphan in sorted(flacs - named):
            problems.add("audio files without a transcript line", os.path.join(folder, orphan + ".flac"))
    problems.report()
    if not rows:
        raise ValueError(f"LibriSpeech {split}: no utterance with audio and transcript under {root}")
    return sorted(rows, key=lambda r: r["ID"])


def prepare_librispeech(data_folder: str, save_folder: str, splits: Sequence[str], skip_prep: bool = False,
                        merge: Optional[Mapping[str, Sequence[str]]] = None) -> Dict[str, str]:
    """Write ``<save_folder>/<split>.csv`` for every split (kept when they match these options).

    Arguments
    ---------
    data_folder : str
        The LibriSpeech root as distributed.
    save_folder : str
        Where the manifests go (the recipe's ``<exp>/data``).
    splits : sequence of str
        Split folder names (``train-clean-100``, ``dev-clean``, ...).
    skip_prep : bool
        Do nothing (the manifests are made elsewhere).
    merge : mapping, optional
        Also write ``<save_folder>/<name>.csv`` holding these splits' rows
        (``{"train": train_splits, "valid": dev_splits}``: what training reads).

    Returns
    -------
    dict
        Split -> manifest path.
    """
    merge = {name: list(parts) for name, parts in (merge or {}).items()}
    clash = sorted(set(merge) & set(splits))
    if clash:
        raise ValueError(f"LibriSpeech: merged manifest name(s) {clash} are also split names")
    outputs = {split: os.path.join(save_folder, f"{split}.csv") for split in dict.fromkeys([*splits, *sum(merge.values(), [])])}
    merged = {name: os.path.join(save_folder, f"{name}.csv") for name in merge}
    if skip_prep:
        return outputs
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"LibriSpeech data_folder '{data_folder}' does not exist (pass the corpus root, "
                                "the folder that holds train-clean-100/, dev-clean/, ...)")
    options = {"data_folder": os.path.abspath(data_folder), "splits": sorted(outputs), "merge": merge, "format": 1}
    if already_prepared(save_folder, "librispeech", options, [*outputs.values(), *merged.values()]):
        print(f"LibriSpeech manifests in {save_folder} match these options; kept")
        return {**outputs, **merged}
    rows = {}
    for split, path in outputs.items():
        rows[split] = split_rows(data_folder, split)
        print(f"LibriSpeech {split}: {write_manifest(path, rows[split])} utterances -> {path}")
    for name, parts in merge.items():
        write_manifest(merged[name], [r for part in parts for r in rows[part]])
    mark_prepared(save_folder, "librispeech", options)
    return {**outputs, **merged}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_folder")
    p.add_argument("save_folder")
    p.add_argument("--train_splits", nargs="+", required=True)
    p.add_argument("--dev_splits", nargs="+", required=True)
    p.add_argument("--test_splits", nargs="+", required=True)
    args = p.parse_args(argv)
    prepare_librispeech(args.data_folder, args.save_folder, [*args.train_splits, *args.dev_splits, *args.test_splits],
                        merge={"train": args.train_splits, "valid": args.dev_splits})


if __name__ == "__main__":
    main()
