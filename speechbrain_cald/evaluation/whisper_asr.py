"""Stage 4 of the Whisper recipes: WER, agreement with the teacher, targets, speed, RESULTS.md.

Every model is read from its ``<model>/inference/`` folder (written at the end
of its training stage; no code in it) and decodes every test set greedily
(``tasks.whisper_asr.greedy_decode``: CTranslate2's rules). Words are compared
after Whisper's English text normaliser (transformers' ``EnglishTextNormalizer``
with the spelling table that PyPI's openai-whisper ships), as Whisper's papers
score; the WER is computed twice (SpeechBrain and jiwer must agree). The
*agreement WER* scores each student's transcripts against the teacher's: how
much of the teacher it kept, whatever the references say.

    python -m speechbrain_cald.evaluation.whisper_asr --exp EXP --models teacher=EXP/teacher \\
        mini_mamba_target=EXP/mini_mamba_target --data_root EXP/data --sets test_hibari=EXP/data/test_hibari.csv \\
        --results_md EXP/RESULTS.md [--extra_tests mine=/data/mine.csv] [--target_student mini_mamba_target]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from speechbrain_cald.bench.speed import plot_speed, run_isolated, speed_table
from speechbrain_cald.data.audio import read_audio
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.evaluation.report import (
    add_report_arguments,
    count_params,
    parse_pairs,
    parse_report_arguments,
    report_tail,
    results_header,
    write_results,
)
from speechbrain_cald.evaluation.wer import corpus_wer

from speechbrain_cald.inference import load_whisper_folder
from speechbrain_cald.lobes.whisper import WhisperText, greedy_decode, log_mel

__all__ = ["english_normalizer", "transcribe_manifest", "whisper_targets", "main"]

SPEED_FACTORY = "speechbrain_cald.inference:whisper_encoder_factory"


class NormalizerMissingError(FileNotFoundError):
    """The spelling table of Whisper's normaliser (PyPI openai-whisper) is not installed."""


def english_normalizer():
    """Whisper's English normaliser: transformers' class with openai-whisper's spelling table.

    The package is found, never imported (it imports numba and tiktoken); only
    its ``normalizers/english.json`` is read.

    Example
    -------
    >>> norm = english_normalizer()  # doctest: +SKIP
    >>> norm("Mr. Smith isn't colour-blind.")  # doctest: +SKIP
    'mister smith is not color blind'
    """
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spec = importlib.util.find_spec("whisper")
    table = None
    if spec is not None and spec.submodule_search_locations:
        table = os.path.join(list(spec.submodule_search_locations)[0], "normalizers", "english.json")
    if table is None or not os.path.isfile(table):
        raise NormalizerMissingError(
            "Whisper's English spelling table (normalizers/english.json) ships in PyPI's openai-whisper: "
            "./run.sh installs it (pip install --no-deps openai-whisper==20250625)"
        )
    with open(table, encoding="utf-8") as f:
        return EnglishTextNormalizer(json.load(f))


def transcribe_manifest(model, text: WhisperText, extractor, manifest: str, data_root: str,
                        batch: int = 8) -> Tuple[List[str], List[str], List[str]]:
    """Greedy transcripts of every row of a manifest (``ID, wav, wrd``; each row one 30-s window at most).

    Returns
    -------
    (ids, references, hypotheses)
    """
    rows = read_manifest(manifest)
    ids, refs, hyps = [], [], []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        feats = []
        for row in chunk:
            audio = read_audio(row["wav"].replace("$data_root", data_root), 16000)
            if len(audio) > 30 * 16000:
                raise ValueError(f"{manifest}: {row['ID']} is {len(audio) / 16000:.1f} s long; Whisper reads "
                                 "windows of at most 30 s (cut it, or pack shorter utterances)")
            feats.append(torch.from_numpy(log_mel(extractor, audio)))
        for row, ids_out in zip(chunk, greedy_decode(model, torch.stack(feats), text)):
            ids.append(row["ID"])
            refs.append(row["wrd"])
            hyps.append(text.decode(ids_out))
    return ids, refs, hyps


def _write_hyps(path: str, ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "reference", "hypothesis"])
        w.writerows(zip(ids, refs, hyps))


def _wer(ids, refs, hyps, norm) -> Tuple[float, int]:
    r = corpus_wer(list(ids), [norm(x) for x in refs], [norm(x) for x in hyps])
    return r.wer, r.ref_words


def whisper_targets(wer: Dict[str, Dict[str, float]], agreement: Dict[str, Dict[str, float]], teacher: str,
                    target: str, unguided: Optional[str], neural_set: str, real_sets: Sequence[str],
                    real_wer: Dict[str, float]) -> List[Tuple[str, bool, str]]:
    """The recipe's targets as ``(target, met, measured)``.

    - the target student's WER on ``neural_set`` within max(10% relative, 1 point) of the teacher's;
    - within 3 points of the teacher on the real clips (``real_sets`` pooled: ``real_wer``);
    - its agreement WER on ``neural_set`` at most 10%;
    - the unguided student's gap at least 3x the target student's.

    Example
    -------
    >>> wer = {"teacher": {"hib": 10.0}, "s": {"hib": 10.5}, "u": {"hib": 30.0}}
    >>> [m for _, m, _ in whisper_targets(wer, {"s": {"hib": 4.0}}, "teacher", "s", "u", "hib", ["clips"],
    ...                                    {"teacher": 5.0, "s": 6.0})]
    [True, True, True, True]
    >>> [m for _, m, _ in whisper_targets(dict(wer, s={"hib": 12.0}), {"s": {"hib": 11.0}}, "teacher", "s", "u",
    ...                                    "hib", ["clips"], {"teacher": 5.0, "s": 9.0})]
    [False, False, False, True]
    """
    out = []
    t, s = wer[teacher][neural_set], wer[target][neural_set]
    bound = max(0.10 * t, 1.0)
    out.append((f"{target} WER on {neural_set} within max(10% relative, 1 point) of the teacher's "
                f"({t:.2f} + {bound:.2f})", s <= t + bound, f"{s:.2f}"))
    if real_sets and teacher in real_wer and target in real_wer:
        gap = real_wer[target] - real_wer[teacher]
        out.append((f"{target} within 3 points of the teacher on the real clips ({' + '.join(real_sets)}: "
                    f"{real_wer[teacher]:.2f})", gap <= 3.0, f"{real_wer[target]:.2f} ({gap:+.2f})"))
    agree = agreement[target][neural_set]
    out.append((f"{target} agreement WER with the teacher on {neural_set} at most 10%", agree <= 10.0, f"{agree:.2f}"))
    if unguided and unguided in wer:
        gap_t, gap_u = s - t, wer[unguided][neural_set] - t
        out.append((f"{unguided}'s gap on {neural_set} at least 3x {target}'s ({gap_t:+.2f})",
                    gap_u >= 3 * max(gap_t, 0.0) and gap_u > 0, f"{gap_u:+.2f}"))
    return out


def _max_seconds(folder: str) -> Optional[float]:
    """The longest audio a converted encoder reads (a Linformer's ``max_len`` frames at 50 per second), else None."""
    path = os.path.join(folder, "cald_conversion.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        max_len = (json.load(f).get("mixer_options") or {}).get("max_len")
    return None if max_len is None else max_len / 50.0


def _curve(folder: str, text, extractor, manifest: str, data_root: str, norm, teacher_hyps) -> List[Tuple[int, float, float]]:
    """WER and agreement of a student's snapshots (``<model>/snapshots/step_*.ckpt``) on one set."""
    from speechbrain_cald.distill.snapshots import list_snapshots

    if not os.path.isdir(os.path.join(folder, "snapshots")):
        return []
    snaps = list_snapshots(os.path.join(folder, "snapshots"))
    model = load_whisper_folder(os.path.join(folder, "inference"))
    rows = []
    for step, path in snaps:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        ids, refs, hyps = transcribe_manifest(model, text, extractor, manifest, data_root)
        rows.append((step, _wer(ids, refs, hyps, norm)[0], _wer(ids, teacher_hyps, hyps, norm)[0]))
        print(f"  {os.path.basename(folder)} step {step}: WER {rows[-1][1]:.2f}, agreement {rows[-1][2]:.2f}", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Stage 4 (see the module's text)."""
    from transformers import WhisperFeatureExtractor

    parser = add_report_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]),
                                  "Mini Whisper recipe (Whisper tiny.en)")
    parser.add_argument("--extra_tests", nargs="*", default=[], help="name=manifest.csv ... (ID, duration, wav, wrd)")
    parser.add_argument("--target_student", default="", help="the model the targets are about")
    parser.add_argument("--unguided_student", default="", help="the unguided model of the same mixer")
    parser.add_argument("--neural_set", default="test_hibari")
    parser.add_argument("--real_sets", nargs="*", default=["librivox", "cards"])
    parser.add_argument("--teacher_bench_seconds", type=float, nargs="*", default=None,
                        help="lengths for the teacher (default: --bench_seconds)")
    parser.add_argument("--curve", default="", help="a model whose snapshots get a WER-vs-steps curve")
    parser.add_argument("--decode_batch", type=int, default=8)
    parser.add_argument("--notes", default="", help="hand-written analysis included in RESULTS.md when the file exists")
    args, models, sets = parse_report_arguments(parser, argv)
    sets.update(parse_pairs(args.extra_tests, "--extra_tests"))
    for name, path in sets.items():
        if not os.path.isfile(path):
            raise SystemExit(f"test set '{name}': no manifest {path}")
    start = time.time()
    norm = english_normalizer()
    teacher = next(iter(models))
    wer: Dict[str, Dict[str, float]] = {}
    words: Dict[str, int] = {}
    agreement: Dict[str, Dict[str, float]] = {}
    hyps_by: Dict[str, Dict[str, Tuple[list, list, list]]] = {}
    sizes: Dict[str, int] = {}
    text = extractor = None
    for name, folder in models.items():
        inference = os.path.join(folder, "inference")
        model = load_whisper_folder(inference)
        sizes[name] = count_params(model.get_encoder())
        text = WhisperText(inference)
        extractor = WhisperFeatureExtractor.from_pretrained(inference)
        wer[name], hyps_by[name] = {}, {}
        for set_name, manifest in sets.items():
            ids, refs, hyps = transcribe_manifest(model, text, extractor, manifest, args.data_root, args.decode_batch)
            hyps_by[name][set_name] = (ids, refs, hyps)
            wer[name][set_name], words[set_name] = _wer(ids, refs, hyps, norm)
            _write_hyps(os.path.join(folder, "hyps", f"{set_name}.csv"), ids, refs, hyps)
            print(f"{name:28s} {set_name:14s} WER {wer[name][set_name]:6.2f}", flush=True)
        if name != teacher:
            agreement[name] = {s: _wer(hyps_by[teacher][s][0], hyps_by[teacher][s][2], hyps_by[name][s][2], norm)[0]
                               for s in sets}
        del model
    real = [s for s in args.real_sets if s in sets]
    real_wer = {}
    for name in models:
        if real:
            ids = [i for s in real for i in hyps_by[name][s][0]]
            refs = [r for s in real for r in hyps_by[name][s][1]]
            hyps = [h for s in real for h in hyps_by[name][s][2]]
            real_wer[name] = _wer(ids, refs, hyps, norm)[0]
    lines = results_header(args.title, "Greedy decoding (CTranslate2's rules), Whisper's English text normaliser")
    lines += ["## WER (%) per test set\n", "Words after Whisper's English normaliser; corpus WER (SpeechBrain and "
              "jiwer agree). *Agreement* scores a student's transcripts against the teacher's.\n"]
    head = "| model | encoder params | " + " | ".join(f"{s} ({words[s]} words)" for s in sets)
    head += " | real clips pooled |" if real else " |"
    lines += [head, "|---" * (2 + len(sets) + (1 if real else 0)) + "|"]
    for name in models:
        cells = [f"{wer[name][s]:.2f}" for s in sets] + ([f"{real_wer[name]:.2f}"] if real else [])
        lines.append(f"| {name} | {sizes[name] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    if agreement:
        lines += ["", "### Agreement WER (%) with the teacher's transcripts\n",
                  "| student | " + " | ".join(sets) + " |", "|---" * (1 + len(sets)) + "|"]
        for name, by_set in agreement.items():
            lines.append(f"| {name} | " + " | ".join(f"{by_set[s]:.2f}" for s in sets) + " |")
    if args.target_student and args.target_student in wer:
        lines += ["", "## Targets\n", "| target | measured | met |", "|---|---|---|"]
        for what, met, measured in whisper_targets(wer, agreement, teacher, args.target_student,
                                                   args.unguided_student or None, args.neural_set, real, real_wer):
            lines.append(f"| {what} | {measured} | {'met' if met else '**missed**'} |")
            print(f"target: {what}: {measured} -> {'met' if met else 'MISSED'}", flush=True)
    if args.curve and args.curve in models and args.neural_set in sets:
        curve = _curve(models[args.curve], text, extractor, sets[args.neural_set], args.data_root, norm,
                       hyps_by[teacher][args.neural_set][2])
        if curve:
            lines += ["", f"## {args.curve}: WER vs training steps on {args.neural_set}\n",
                      "Step 0 is the converted model after the mixer alignment (when the YAML runs one).\n",
                      "| step | WER | agreement WER |", "|---|---|---|"]
            lines += [f"| {step} | {w:.2f} | {a:.2f} |" for step, w, a in curve]
    speed: Dict[str, list] = {}
    if args.bench_seconds:
        for name, folder in models.items():
            lengths = args.teacher_bench_seconds if name == teacher and args.teacher_bench_seconds is not None \
                else args.bench_seconds
            limit = _max_seconds(os.path.join(folder, "inference"))
            lengths = [s for s in lengths if limit is None or s <= limit]  # a Linformer has no rows past them
            speed[name] = run_isolated(SPEED_FACTORY, os.path.join(folder, "inference"), lengths, args.bench_repeats)
            print(f"{name:28s} encoder ms: " + "  ".join(f"{r['length']:g}s {r['ms']:.0f}" for r in speed[name]),
                  flush=True)
        png = plot_speed(speed, os.path.join(os.path.dirname(os.path.abspath(args.results_md)), "speed_vs_length.png"),
                         title="Whisper encoder layers: time vs audio length", xlabel="audio (s)")
        lines += ["", "## Encoder time (median ms) and peak memory rise (MB) vs audio length\n",
                  "On the CPU, batch 1, no grad, the encoder layers and final norm (the convolutional front end "
                  "computed beforehand), random features; each model in its own process. Past 30 s the teacher "
                  "reads its 1,500 positions tiled (what it would cost, not what it was trained for).\n",
                  speed_table(speed, "s"), "", f"![encoder time vs audio length]({os.path.basename(png)})"]
    if args.notes and os.path.exists(args.notes):
        with open(args.notes, encoding="utf-8") as f:
            lines += ["", f"## Notes (from {os.path.basename(args.notes)})\n", f.read().strip()]
    lines += [""] + report_tail(args, time.time() - start)
    write_results(args.results_md, "\n".join(lines))
    print(f"wrote {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
