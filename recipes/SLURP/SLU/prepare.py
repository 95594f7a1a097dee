#!/usr/bin/env python3
"""SLURP as distributed -> one SpeechBrain manifest per split (stage 0 of the SLU recipe).

Reads the corpus the way it is distributed: the text index of the SLURP
repository and the two audio archives unpacked beside it::

    <data_folder>/dataset/slurp/{train,devel,test,train_synthetic}.jsonl
    <data_folder>/slurp_real/*.flac     (or <data_folder>/audio/slurp_real/)
    <data_folder>/slurp_synth/*.flac    (or <data_folder>/audio/slurp_synth/)

Each JSON line is one record (``slurp_id``, ``sentence``, ``intent`` or
``scenario`` + ``action``, ``recordings: [{"file": ...}, ...]``); every
recording of a record becomes one utterance labelled with the record's intent
(``<scenario>_<action>``). Writes ``<save_folder>/{train,devel,test}.csv``
(+ ``train_synthetic.csv`` with ``--use_synthetic true``) with the columns
``ID, duration, wav, label, scenario, action, transcript, slurp_id``; ``wav``
is relative to ``$data_root`` (the corpus folder).

The label set is that of the training split (train + train_synthetic when
used); a devel / test record with another intent is an error naming it.
Recordings whose file is missing are counted and reported per split (with
``missing_<split>.txt`` beside the manifests); a split with none left is an error.

    python prepare.py --data_folder /data/SLURP --save_folder results/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

from tqdm import tqdm

from speechbrain_cald.data import preparation as prep
from speechbrain_cald.data.preparation import CorpusError, MissingRecordings
from speechbrain_cald.data.utf8 import utf8_lines

SPLITS = ("train", "devel", "test")  # SLURP's own split names
SYNTHETIC = "train_synthetic"
FIELDS = ["ID", "duration", "wav", "label", "scenario", "action", "transcript", "slurp_id"]
AUDIO = {"real": "slurp_real", "synth": "slurp_synth"}
MANIFEST_VERSION = 1  # bump when the manifest columns or IDs change


def index_file(data_folder: str, split: str) -> str:
    """Where ``<split>.jsonl`` is: ``dataset/slurp/`` (the repository layout) or the corpus root."""
    candidates = [os.path.join(data_folder, "dataset", "slurp", f"{split}.jsonl"), os.path.join(data_folder, f"{split}.jsonl")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise CorpusError(
        f"SLURP: no index for split '{split}': looked for {' and '.join(candidates)} "
        "(the text annotations of the SLURP repository, dataset/slurp/*.jsonl)"
    )


def audio_folders(data_folder: str, kind: str) -> List[str]:
    """Where the recordings may be, the split's own kind first (``real`` or ``synth``)."""
    order = [kind] + [k for k in AUDIO if k != kind]
    return [os.path.join(data_folder, sub, AUDIO[k]) for k in order for sub in ("", "audio")]


def record_label(record: dict, where: str) -> str:
    """The record's intent: ``intent``, else ``<scenario>_<action>``."""
    if record.get("intent"):
        return str(record["intent"])
    if record.get("scenario") and record.get("action"):
        return f"{record['scenario']}_{record['action']}"
    raise CorpusError(f"{where}: the record has neither 'intent' nor 'scenario' + 'action' (keys: {sorted(record)})")


def read_split(data_folder: str, split: str, kind: str, missing: MissingRecordings) -> List[Dict[str, object]]:
    """Manifest rows of one split: one per recording found on disk."""
    path = index_file(data_folder, split)
    folders = audio_folders(data_folder, kind)
    shown = os.path.relpath(path, data_folder)
    rows = []
    lines = [line for _, line in utf8_lines(path, error=CorpusError)]
    for n, line in enumerate(tqdm(lines, desc=f"SLURP {split}", unit="record", dynamic_ncols=True), start=1):
        if not line.strip():
            continue
        where = f"{shown} line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{path} line {n}: not a JSON record ({err})") from err
        if not isinstance(record, dict) or not isinstance(record.get("recordings"), list):
            raise CorpusError(f"{path} line {n}: a SLURP record needs a 'recordings' list")
        label = record_label(record, f"{path} line {n}")
        slurp_id = record.get("slurp_id", f"line{n}")
        where = f"{where} (slurp_id {slurp_id})"
        for recording in record["recordings"]:
            name = recording.get("file") if isinstance(recording, dict) else None
            if not name:
                raise CorpusError(f"{path} line {n}: a recording without 'file': {recording!r}")
            wav = missing.locate(split, name, folders, where)
            if wav is None:
                continue
            rows.append({
                "ID": f"{slurp_id}_{os.path.splitext(os.path.basename(name))[0]}",
                "duration": prep.audio_duration(wav),
                "wav": prep.relative_to_root(wav, data_folder),
                "label": label,
                "scenario": record.get("scenario", ""),
                "action": record.get("action", ""),
                "transcript": record.get("sentence", ""),
                "slurp_id": slurp_id,
                "where": where,
            })
    return rows


def prepare_slurp(data_folder: str, save_folder: str, use_synthetic: bool = True, skip_prep: bool = False) -> Dict[str, str]:
    """Write the SLURP manifests (skipped when they exist and were made from the same corpus and options).

    Arguments
    ---------
    data_folder : str
        The SLURP root as distributed.
    save_folder : str
        Where ``<split>.csv`` go.
    use_synthetic : bool
        Also prepare ``train_synthetic`` (part of the training data, SpeechBrain's SLURP recipe's default).
    skip_prep : bool
        Do nothing (the manifests are already there).

    Returns
    -------
    dict
        SLURP's split names (``train_synthetic`` too with ``use_synthetic``) -> manifest path.
    """
    splits = list(SPLITS) + ([SYNTHETIC] if use_synthetic else [])
    return prep.prepare_classification_corpus(
        "SLURP", data_folder, save_folder, splits,
        options=lambda: {
            "version": MANIFEST_VERSION, "use_synthetic": bool(use_synthetic),
            "index": {split: prep.file_signature(index_file(data_folder, split)) for split in splits},
        },
        read=lambda missing: {
            split: read_split(data_folder, split, "synth" if split == SYNTHETIC else "real", missing) for split in splits
        },
        fields=FIELDS, train_splits=["train"] + ([SYNTHETIC] if use_synthetic else []), required=SPLITS,
        hint=f"recordings are looked for in {data_folder}/[audio/]slurp_real and .../slurp_synth "
             "(the slurp_real / slurp_synth archives unpacked)",
        skip_prep=skip_prep,
    )


def parse_bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_folder", required=True, help="the SLURP root as distributed")
    p.add_argument("--save_folder", required=True, help="where the manifests go (<exp>/data)")
    p.add_argument("--use_synthetic", type=parse_bool, default=True, help="prepare train_synthetic too (true|false)")
    args = p.parse_args(argv)
    return prep.run_preparation(prepare_slurp, data_folder=args.data_folder, save_folder=args.save_folder,
                                use_synthetic=args.use_synthetic)


if __name__ == "__main__":
    sys.exit(main())
