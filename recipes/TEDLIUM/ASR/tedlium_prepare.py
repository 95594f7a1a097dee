#!/usr/bin/env python3
"""Stage 0 of the TED-LIUM recipe: segment manifests per split, plus whole-talk manifests.

Reads TED-LIUM as distributed: release 3 ``<data_folder>/legacy/<split>/{sph,stm}``
(the release-2-compatible split) or release 2 ``<data_folder>/<split>/{sph,stm}``,
one ``<talk>.sph`` (NIST SPHERE, 16 kHz 16-bit, read by soundfile) and one
``<talk>.stm`` per talk. Each STM line ``<talk> <channel> <speaker> <start> <end>
<label> <words>`` becomes a segment ``<talk>-<start cs>-<end cs>`` cut from the
talk by those times (``start``/``stop`` columns); lines whose text is
``ignore_time_segment_in_scoring`` are dropped.

Text normalisation (TED-LIUM's tokenisation, as Kaldi's and ESPnet's recipes
undo it): a token starting with an apostrophe joins the word before it
(``it 's`` -> ``it's``, ``we 're`` -> ``we're``); ``<unk>`` (a word the
transcribers could not make out), ``<sil>``, ``{NOISE}``-style tags and
pronunciation-variant marks ``(2)`` are removed; a trailing ``(talk-id)``
is removed; words are single-spaced, lower case. A segment left without words
is dropped (counted).

Outputs in ``<save_folder>``: ``<split>.csv`` (``ID, duration, wav, start, stop,
spk_id, wrd``) and ``<split>_talks.csv`` (one row per talk: the whole
recording, its scored segments' words in time order), for decoding whole talks.

    python tedlium_prepare.py /data/TEDLIUM_release-3 results/data --splits train dev test
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Sequence, Tuple

from speechbrain_cald.data.audio import audio_info, truncation_problem
from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.prepared import already_prepared, mark_prepared
from speechbrain_cald.data.utf8 import utf8_lines

SEGMENT_FIELDS = ["ID", "duration", "wav", "start", "stop", "spk_id", "wrd"]
_DROP = re.compile(r"^(<unk>|<sil>|\{.*\}|\[.*\])$")
_VARIANT = re.compile(r"\(\d+\)$")


def normalize_text(words: str) -> str:
    """TED-LIUM's transcript tokens to plain words (see the module docstring).

    Example
    -------
    >>> normalize_text("it 's a <unk> day we 're {NOISE} here(2) do n't")
    "it's a day we're here don't"
    """
    out: List[str] = []
    for token in words.lower().split():
        token = _VARIANT.sub("", token)
        if not token or _DROP.match(token):
            continue
        if token == "n't" and out:  # "do n't" (some transcripts split before the n)
            out[-1] += token
        elif token.startswith("'") and out:
            out[-1] += token
        else:
            out.append(token)
    return " ".join(out)


def split_root(data_folder: str, split: str) -> Tuple[str, int]:
    """``(<split folder>, release)``: release 3's ``legacy/<split>`` or release 2's ``<split>``."""
    for folder, release in ((os.path.join(data_folder, "legacy", split), 3), (os.path.join(data_folder, split), 2)):
        if os.path.isdir(os.path.join(folder, "stm")) and os.path.isdir(os.path.join(folder, "sph")):
            return folder, release
    present = sorted(os.listdir(data_folder)) if os.path.isdir(data_folder) else []
    raise FileNotFoundError(
        f"TED-LIUM split '{split}': neither {os.path.join(data_folder, 'legacy', split)}/{{sph,stm}} (release 3) nor "
        f"{os.path.join(data_folder, split)}/{{sph,stm}} (release 2) exists (data_folder {data_folder} holds: "
        f"{', '.join(present) or 'nothing'}); pass the corpus root, e.g. --data_folder=/data/TEDLIUM_release-3")


def _stm_times(parts: List[str], path: str, number: int) -> Tuple[float, float]:
    """``(start, end)`` seconds of an STM line's fields 4 and 5, or an error naming the file and line."""
    try:
        return float(parts[3]), float(parts[4])
    except ValueError:
        raise ValueError(
            f"{path}:{number}: STM start and end times must be seconds (fields 4 and 5 of "
            f"'<talk> <channel> <speaker> <start> <end> <label> <words>'), found {parts[3]!r} {parts[4]!r}"
        ) from None


def split_rows(data_folder: str, split: str) -> Tuple[List[dict], List[dict]]:
    """``(segments, talks)`` manifest rows of one split (problems reported on stderr)."""
    root, _release = split_root(data_folder, split)
    problems: Dict[str, List[str]] = {}
    segments, talks = [], []
    stms = sorted(f for f in os.listdir(os.path.join(root, "stm")) if f.endswith(".stm"))
    sphs = {f[:-4] for f in os.listdir(os.path.join(root, "sph")) if f.endswith(".sph")}
    for stm in stms:
        talk = stm[:-4]
        path = os.path.join(root, "stm", stm)
        if talk not in sphs:
            problems.setdefault("STM files without audio", []).append(f"{path} ({talk}.sph missing)")
            continue
        audio = os.path.join(root, "sph", talk + ".sph")
        info = audio_info(audio)
        cut = truncation_problem(audio, info.frames)
        if cut is not None:  # kept: the manifest check refuses its segments before training, naming the file
            problems.setdefault("talks whose audio is cut short (their segments are refused before training)",
                                []).append(f"{audio} ({cut})")
        wav = "$data_root/" + os.path.relpath(audio, data_folder).replace(os.sep, "/")
        talk_words, talk_segments = [], []
        for number, line in utf8_lines(path):
            if not line.strip() or line.startswith(";;"):
                continue
            parts = line.split()
            if len(parts) < 6:
                problems.setdefault("malformed STM lines", []).append(f"{path}:{number}")
                continue
            text = " ".join(parts[6:])
            if text.strip() == "ignore_time_segment_in_scoring":
                continue
            start, stop = _stm_times(parts, path, number)
            stop = min(stop, info.duration)
            words = normalize_text(re.sub(r"\([^ ]*\)$", "", text.strip()))
            if not words:
                problems.setdefault("segments without words after normalisation", []).append(f"{path}:{number}")
                continue
            if stop - start < 0.05:
                problems.setdefault("segments shorter than 50 ms or beyond the audio", []).append(f"{path}:{number}")
                continue
            seg_id = f"{talk}-{int(round(start * 100)):07d}-{int(round(stop * 100)):07d}"
            talk_segments.append(dict(ID=seg_id, duration=stop - start, wav=wav, start=f"{start:.2f}",
                                      stop=f"{stop:.2f}", spk_id=parts[2], wrd=words))
            talk_words.append((start, words))
        if not talk_segments:
            problems.setdefault("talks without a scored segment", []).append(path)
        if talk_segments:
            segments += talk_segments
            talks.append(dict(ID=talk, duration=info.duration, wav=wav, spk_id=talk,
                              wrd=" ".join(w for _, w in sorted(talk_words))))
    for orphan in sorted(sphs - {s[:-4] for s in stms}):
        problems.setdefault("audio files without an STM file", []).append(os.path.join(root, "sph", orphan + ".sph"))
    for kind, where in problems.items():
        more = f" (and {len(where) - 5} more)" if len(where) > 5 else ""
        print(f"WARNING: TED-LIUM {split}: {len(where)} {kind}, skipped: " + "; ".join(where[:5]) + more, file=sys.stderr)
    if not segments:
        raise ValueError(f"TED-LIUM {split}: no scored segment with audio under {root}")
    return sorted(segments, key=lambda r: r["ID"]), talks


def prepare_tedlium(data_folder: str, save_folder: str, splits: Sequence[str], skip_prep: bool = False) -> Dict[str, str]:
    """Write ``<split>.csv`` and ``<split>_talks.csv`` for every split (kept when they match these options).

    Returns
    -------
    dict
        Manifest name -> path.
    """
    outputs = {}
    for split in dict.fromkeys(splits):
        outputs[split] = os.path.join(save_folder, f"{split}.csv")
        outputs[f"{split}_talks"] = os.path.join(save_folder, f"{split}_talks.csv")
    if skip_prep:
        return outputs
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"TED-LIUM data_folder '{data_folder}' does not exist (pass the corpus root, "
                                "e.g. TEDLIUM_release-3/ or TEDLIUM_release2/)")
    options = {"data_folder": os.path.abspath(data_folder), "splits": sorted(dict.fromkeys(splits)), "format": 1}
    if already_prepared(save_folder, "tedlium", options, outputs.values()):
        print(f"TED-LIUM manifests in {save_folder} match these options; kept")
        return outputs
    for split in dict.fromkeys(splits):
        segments, talks = split_rows(data_folder, split)
        write_manifest(outputs[split], segments, fields=SEGMENT_FIELDS)
        write_manifest(outputs[f"{split}_talks"], talks)
        print(f"TED-LIUM {split}: {len(segments)} segments of {len(talks)} talks -> {outputs[split]}")
    mark_prepared(save_folder, "tedlium", options)
    return outputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_folder")
    p.add_argument("save_folder")
    p.add_argument("--splits", nargs="+", required=True)
    args = p.parse_args(argv)
    prepare_tedlium(args.data_folder, args.save_folder, args.splits)


if __name__ == "__main__":
    main()
