"""Tiny corpora in the official distributed layouts of SLURP and VoxCeleb1, spoken by espeak-ng.

For tests and for trying a recipe before the real corpus is on disk: the files
are laid out, named and indexed exactly as the real corpora are, so the
recipes' preparation reads them with the code that reads the real ones.

SLURP (github.com/pswietojanski/slurp + the two audio archives)::

    <root>/dataset/slurp/{train,devel,test,train_synthetic}.jsonl
    <root>/slurp_real/audio-<n>[-headset].flac      (``audio_subfolder=True``:
    <root>/slurp_synth/audio-<n>.flac                under <root>/audio/)

Each JSON line is a record ``{"slurp_id", "sentence", "sentence_annotation",
"intent", "action", "scenario", "tokens", "recordings": [{"file", "wer",
"ent_wer", "status"}], "entities"}``; every recording is the sentence spoken by
another voice.

VoxCeleb1 (the two wav archives unpacked together + the identification split)::

    <root>/wav/id1XXXX/<11-character video id>/<nnnnn>.wav
    <root>/iden_split.txt         lines "1|2|3 id1XXXX/<video>/<nnnnn>.wav"

One speaker is one espeak-ng voice (accent + variant, own pitch and rate).

With a tiny random wav2vec2 beside it (``--model_dir``), a recipe runs end to end on a CPU
in a minute::

    python -m speechbrain_cald.testing.slurp_voxceleb1 slurp /tmp/SLURP --model_dir /tmp/w2v
    python -m speechbrain_cald.testing.slurp_voxceleb1 voxceleb1 /tmp/VoxCeleb1 --model_dir /tmp/w2v
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from speechbrain_cald.data.espeak import synthesize

__all__ = ["SLURP_SENTENCES", "manifest_pairs", "write_slurp_sample", "write_voxceleb1_sample"]

# Sentences per intent (SLURP's "<scenario>_<action>"; "iot_hue_lightoff" keeps an underscore in its action).
_SLURP_TEXT = """
alarm_set: wake me up at seven in the morning / set an alarm for six / please set my alarm for nine tomorrow /
    i need an alarm at five thirty / alarm for eight am please / wake me at noon
weather_query: what is the weather like today / will it rain tomorrow / is it going to be sunny this weekend /
    how cold is it outside / tell me the forecast for london / do i need an umbrella
play_music: play some jazz music / put on my favourite song / play the latest album by the beatles /
    i want to hear some rock / start my morning playlist / play something relaxing
iot_hue_lightoff: turn off the lights / switch the kitchen lights off / lights off in the bedroom /
    please turn the lamp off / shut off all the lights / turn the living room lights off
calendar_query: what is on my calendar today / do i have any meetings tomorrow / when is my next appointment /
    what does my week look like / am i free on friday afternoon / read my schedule for monday
"""


def _intents(text: str) -> Dict[str, Tuple[str, str, Tuple[str, ...]]]:
    """intent -> (scenario, action, sentences) from ``intent: sentence / sentence ...`` entries."""
    table = {}
    for entry in text.replace("/\n    ", "/ ").strip().splitlines():
        intent, sentences = entry.split(": ", 1)
        scenario, action = intent.split("_", 1)
        table[intent] = (scenario, action, tuple(s.strip() for s in sentences.split(" / ")))
    return table


SLURP_SENTENCES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = _intents(_SLURP_TEXT)

VOICES = (
    "en-us+m3", "en-gb+f2", "en-gb-scotland+m1", "en-029+f4", "en-us+m7", "en-gb-x-rp+f3",
    "en-us-nyc+m2", "en-gb-x-gbclan+f1", "en+m4", "en-gb-x-gbcwmd+m5", "en-us+f5", "en-029+m6",
)


def _write_audio(path: str, text: str, voice: str, rate: int, pitch: int, sample_rate: int = 16000) -> float:
    audio = synthesize(text, voice=voice, rate=rate, pitch=pitch, sample_rate=sample_rate)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return len(audio) / sample_rate


def write_slurp_sample(
    root: str,
    records_per_intent: Optional[Dict[str, int]] = None,
    recordings_per_record: int = 2,
    synthetic_per_intent: int = 1,
    intents: Optional[Sequence[str]] = None,
    audio_subfolder: bool = False,
    seed: int = 0,
) -> Dict[str, List[Dict[str, str]]]:
    """Write a tiny SLURP in its distributed layout.

    Arguments
    ---------
    root : str
        The corpus root to create.
    records_per_intent : dict
        Records per intent of each real split (default train 2, devel 1, test 1).
    recordings_per_record : int
        Recordings of each real record (alternately ``-headset`` and far-field names).
    synthetic_per_intent : int
        Records per intent of ``train_synthetic.jsonl`` (one recording each); 0: no synthetic split.
    intents : sequence of str, optional
        Which intents of ``SLURP_SENTENCES`` (default all).
    audio_subfolder : bool
        Audio under ``<root>/audio/slurp_*`` instead of ``<root>/slurp_*``.
    seed : int
        Seed of sentences and voices.

    Returns
    -------
    dict
        split -> ``[{"file", "path", "intent", "slurp_id", "sentence"}, ...]``, every recording written.
    """
    counts = {"train": 2, "devel": 1, "test": 1, **(records_per_intent or {})}
    intents = list(intents or SLURP_SENTENCES)
    unknown = [i for i in intents if i not in SLURP_SENTENCES]
    if unknown:
        raise ValueError(f"write_slurp_sample: unknown intents {unknown}; known: {sorted(SLURP_SENTENCES)}")
    rng = random.Random(seed)
    audio_root = os.path.join(root, "audio") if audio_subfolder else root
    index_dir = os.path.join(root, "dataset", "slurp")
    os.makedirs(index_dir, exist_ok=True)
    plan = [(split, counts[split], recordings_per_record, "slurp_real") for split in ("train", "devel", "test")]
    if synthetic_per_intent:
        plan.append(("train_synthetic", synthetic_per_intent, 1, "slurp_synth"))
    written: Dict[str, List[Dict[str, str]]] = {}
    slurp_id, stamp = 1000, 1434500000
    for split, per_intent, n_rec, folder in plan:
        records, written[split] = [], []
        for intent in intents:
            scenario, action, sentences = SLURP_SENTENCES[intent]
            for _ in range(per_intent):
                sentence = rng.choice(sentences)
                slurp_id += 1 + rng.randrange(5)
                recordings = []
                for r in range(n_rec):
                    stamp += 1 + rng.randrange(1000)
                    headset = folder == "slurp_real" and r % 2 == 0
                    name = f"audio-{stamp}{'-headset' if headset else ''}.flac"
                    path = os.path.join(audio_root, folder, name)
                    _write_audio(path, sentence, rng.choice(VOICES), rng.randint(140, 190), rng.randint(30, 70))
                    recordings.append({"file": name, "wer": 0.0, "ent_wer": None, "status": "correct"})
                    written[split].append(dict(file=name, path=path, intent=intent, slurp_id=str(slurp_id),
                                               sentence=sentence))
                records.append({
                    "slurp_id": slurp_id, "sentence": sentence, "sentence_annotation": sentence,
                    "intent": intent, "action": action,
                    "tokens": [{"surface": w, "id": i, "lemma": w, "pos": "NN"} for i, w in enumerate(sentence.split())],
                    "scenario": scenario, "recordings": recordings, "entities": [],
                })
        rng.shuffle(records)
        with open(os.path.join(index_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    return written


_VIDEO_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

VOX_SENTENCES = (
    "the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step", "we walked along the river until the sun went down",
    "my grandmother always kept a jar of sweets on the shelf", "the train was late again this morning",
    "there is nothing quite like a cup of tea in the afternoon", "he played the piano every evening after dinner",
    "the children laughed as the kite rose into the sky", "please remember to lock the door when you leave",
    "the old bridge was rebuilt after the storm", "they opened a small bakery in the village",
)


def write_voxceleb1_sample(
    root: str,
    n_speakers: int = 3,
    videos_per_speaker: int = 2,
    utterances_per_video: int = 3,
    split_file: str = "iden_split.txt",
    seed: int = 0,
) -> List[Dict[str, str]]:
    """Write a tiny VoxCeleb1 in its distributed layout, one espeak-ng voice per speaker.

    Each speaker's first utterance goes to dev (2), the second to test (3),
    the others to train (1), as in the identification split every speaker is in all three.

    Arguments
    ---------
    root : str
        The corpus root to create.
    n_speakers, videos_per_speaker, utterances_per_video : int
        Sizes (``videos_per_speaker * utterances_per_video >= 3``).
    split_file : str
        Where the split list goes, relative to ``root`` (``meta/iden_split.txt`` also occurs).
    seed : int
        Seed of video ids, sentences and voices.

    Returns
    -------
    list of dict
        ``{"split": "1"|"2"|"3", "relpath", "speaker", "path"}`` per utterance, in split-file order.
    """
    if videos_per_speaker * utterances_per_video < 3:
        raise ValueError("write_voxceleb1_sample: each speaker needs at least 3 utterances (train, dev, test)")
    if n_speakers > len(VOICES):
        raise ValueError(f"write_voxceleb1_sample: at most {len(VOICES)} speakers (distinct voices)")
    rng = random.Random(seed)
    entries = []
    for s in range(n_speakers):
        speaker = f"id{10001 + s}"
        voice, pitch, rate = VOICES[s], 25 + (50 * s) // max(1, n_speakers - 1), 150 + 7 * s
        k = 0
        for _ in range(videos_per_speaker):
            video = "".join(rng.choice(_VIDEO_CHARS) for _ in range(11))
            for u in range(utterances_per_video):
                k += 1
                relpath = f"{speaker}/{video}/{u + 1:05d}.wav"
                split = {1: "2", 2: "3"}.get(k, "1")  # one dev and one test utterance, the rest train
                text = " ".join(rng.sample(VOX_SENTENCES, 2))  # about 4-6 s: VoxCeleb1 utterances last >= 4 s
                path = os.path.join(root, "wav", relpath)
                _write_audio(path, text, voice, rate + rng.randint(-5, 5), pitch)
                entries.append(dict(split=split, relpath=relpath, speaker=speaker, path=path))
    split_path = os.path.join(root, split_file)
    os.makedirs(os.path.dirname(split_path), exist_ok=True)
    with open(split_path, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(f"{e['split']} {e['relpath']}\n")
    return entries


def manifest_pairs(path: str, data_root: str) -> List[Tuple[str, str]]:
    """Sorted ``(audio path, label)`` of a prepared manifest, ``$data_root`` resolved to ``data_root``.

    What a test compares with the recordings a writer above laid down.
    """
    from speechbrain_cald.data.manifest import read_manifest

    return sorted((row["wav"].replace("$data_root", str(data_root)), row["label"]) for row in read_manifest(path))


def main(argv=None) -> None:
    """``python -m speechbrain_cald.testing.slurp_voxceleb1 {slurp,voxceleb1} ROOT [--model_dir DIR]``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", choices=["slurp", "voxceleb1"])
    p.add_argument("root")
    p.add_argument("--model_dir", default="", help="also save a tiny random wav2vec2 here (save_pretrained)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.model_dir:
        from speechbrain_cald.testing.speech import save_tiny_speech_model

        save_tiny_speech_model(args.model_dir)
        print(f"tiny random wav2vec2 -> {args.model_dir}")
    if args.corpus == "slurp":
        written = write_slurp_sample(args.root, seed=args.seed)
        print(", ".join(f"{split}: {len(rows)} recordings" for split, rows in written.items()) + f" -> {args.root}")
    else:
        entries = write_voxceleb1_sample(args.root, seed=args.seed)
        print(f"{len(entries)} utterances of {len({e['speaker'] for e in entries})} speakers -> {args.root}")


if __name__ == "__main__":
    main()
