#!/usr/bin/env python3
"""VoxCeleb1 as distributed -> one SpeechBrain manifest per identification split (stage 0).

Reads the corpus the way it is distributed: the dev and test wav archives
unpacked together, and the identification split list::

    <data_folder>/wav/<speaker>/<video>/<nnnnn>.wav
        (also found in vox1_dev_wav/wav/ and vox1_test_wav/wav/ when unpacked apart)
    <data_folder>/iden_split.txt      (or <data_folder>/meta/iden_split.txt)

``iden_split.txt`` has one line per utterance, ``1|2|3 <speaker>/<video>/<nnnnn>.wav``:
1 = training, 2 = validation, 3 = test (1,251 speakers, each in all three). The
manifests are named ``train.csv``, ``dev.csv`` and ``test.csv``, with the
columns ``ID, duration, wav, label, video``: the label is the speaker id
(``id10001``), ``wav`` is relative to ``$data_root`` (the corpus folder) and the
ID is SpeechBrain's ``<speaker>--<video>--<nnnnn>``.

A file listed in the split file but missing on disk is reported with its name
(counted per split, full list in ``missing_<split>.txt`` beside the
manifests); a file listed twice (under two split codes, or the same one) and
a dev / test speaker absent from training are errors naming the lines.

    python prepare.py --data_folder /data/VoxCeleb1 --save_folder results/data
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

from tqdm import tqdm

from speechbrain_cald.data import preparation as prep
from speechbrain_cald.data.preparation import CorpusError, MissingRecordings
from speechbrain_cald.data.utf8 import utf8_lines

SPLITS = {"1": "train", "2": "dev", "3": "test"}  # iden_split.txt's codes -> manifest names
FIELDS = ["ID", "duration", "wav", "label", "video"]
SPLIT_FILES = ("iden_split.txt", os.path.join("meta", "iden_split.txt"))
WAV_FOLDERS = ("wav", os.path.join("vox1_dev_wav", "wav"), os.path.join("vox1_test_wav", "wav"))
MANIFEST_VERSION = 1  # bump when the manifest columns or IDs change


def split_file(data_folder: str, given: Optional[str] = None) -> str:
    """The identification split list (``given``, else ``iden_split.txt`` or ``meta/iden_split.txt``)."""
    candidates = [given] if given else [os.path.join(data_folder, name) for name in SPLIT_FILES]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise CorpusError(
        f"VoxCeleb1: no identification split list: looked for {' and '.join(candidates)} "
        "(iden_split.txt of the VoxCeleb1 meta data; pass --split_file to name another place)"
    )


def read_split_list(path: str) -> List[tuple]:
    """``[(code, relpath, line number), ...]`` of the split list, checked line by line."""
    entries = []
    for n, line in utf8_lines(path, error=CorpusError):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SPLITS:
            raise CorpusError(
                f"{path} line {n}: expected '<1|2|3> <speaker>/<video>/<nnnnn>.wav', found {line.strip()!r}"
            )
        relpath = parts[1]
        if len(relpath.split("/")) != 3 or not relpath.endswith(".wav"):
            raise CorpusError(f"{path} line {n}: '{relpath}' is not <speaker>/<video>/<nnnnn>.wav")
        entries.append((parts[0], relpath, n))
    if not entries:
        raise CorpusError(f"{path}: the split list is empty")
    _refuse_listed_twice(path, entries)
    return entries


def _refuse_listed_twice(path: str, entries: List[tuple]) -> None:
    """A file under two split codes would be trained on and tested on (or counted twice): name every one."""
    first: Dict[str, tuple] = {}
    twice = []
    for code, relpath, n in entries:
        if relpath in first:
            code0, n0 = first[relpath]
            twice.append(f"{relpath}: line {n0} ({code0} = {SPLITS[code0]}) and line {n} ({code} = {SPLITS[code]})")
        else:
            first[relpath] = (code, n)
    if twice:
        more = f"\n  ... and {len(twice) - 20} more" if len(twice) > 20 else ""
        raise CorpusError(
            f"{path}: {len(twice)} files listed more than once; each file belongs to one split "
            "(1 = train, 2 = dev, 3 = test):\n  " + "\n  ".join(twice[:20]) + more
        )


def read_splits(data_folder: str, list_path: str, folders: List[str], missing: MissingRecordings) -> Dict[str, List[dict]]:
    """Manifest rows of each split (``train``, ``dev``, ``test``): one per listed file found in ``folders``."""
    shown = os.path.relpath(list_path, data_folder)
    rows: Dict[str, List[dict]] = {name: [] for name in SPLITS.values()}
    for code, relpath, n in tqdm(read_split_list(list_path), desc="VoxCeleb1", unit="utt", dynamic_ncols=True):
        split = SPLITS[code]
        where = f"{shown} line {n}"
        wav = missing.locate(split, relpath, folders, where)
        if wav is None:
            continue
        speaker, video, utt = relpath.split("/")
        rows[split].append({
            "ID": f"{speaker}--{video}--{os.path.splitext(utt)[0]}",
            "duration": prep.audio_duration(wav),
            "wav": prep.relative_to_root(wav, data_folder),
            "label": speaker,
            "video": video,
            "where": where,
        })
    return rows


def prepare_voxceleb1(
    data_folder: str, save_folder: str, split_list: Optional[str] = None, skip_prep: bool = False
) -> Dict[str, str]:
    """Write the VoxCeleb1 identification manifests (skipped when up to date).

    Arguments
    ---------
    data_folder : str
        The VoxCeleb1 root as distributed.
    save_folder : str
        Where ``train.csv``, ``dev.csv``, ``test.csv`` go.
    split_list : str, optional
        The identification split file, if not in one of the usual places.
    skip_prep : bool
        Only return the paths.

    Returns
    -------
    dict
        ``train``, ``dev``, ``test`` (codes 1, 2, 3) -> manifest path.
    """
    folders = [os.path.join(data_folder, sub) for sub in WAV_FOLDERS]

    def options() -> dict:
        path = split_file(data_folder, split_list)
        return {"version": MANIFEST_VERSION, "split_list": os.path.abspath(path), "signature": prep.file_signature(path)}

    return prep.prepare_classification_corpus(
        "VoxCeleb1", data_folder, save_folder, list(SPLITS.values()), options,
        read=lambda missing: read_splits(data_folder, split_file(data_folder, split_list), folders, missing),
        fields=FIELDS, train_splits=["train"], required=list(SPLITS.values()),
        hint=f"files are looked for under {', '.join(folders)} (the dev and test wav archives unpacked)",
        skip_prep=skip_prep,
    )


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_folder", required=True, help="the VoxCeleb1 root as distributed")
    p.add_argument("--save_folder", required=True, help="where the manifests go (<exp>/data)")
    p.add_argument("--split_file", default=None, help="iden_split.txt if not in <data_folder>[/meta]")
    args = p.parse_args(argv)
    return prep.run_preparation(prepare_voxceleb1, data_folder=args.data_folder, save_folder=args.save_folder,
                                split_list=args.split_file)


if __name__ == "__main__":
    sys.exit(main())
