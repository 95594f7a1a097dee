#!/usr/bin/env python3
"""Stage 4 of the mini recipe: WER of every model, speed and memory vs length, RESULTS.md.

Each model folder holds SpeechBrain's ``hyperparams.yaml`` (the architecture,
conversion included) and ``model.ckpt`` (the weights train.py exported).
Every model is decoded twice from the same CTC outputs: greedy, and with the
lexicon + word 3-gram beam search of ``hparams/decode.yaml`` (the LM of stage 1).
A long-form recording goes through the encoder in one pass. The WER is
corpus-level and computed twice, by SpeechBrain's ``ErrorRateStats`` and by
jiwer, which must agree.

    python evaluate.py --data_folder data --exp_folder results \
        --models teacher=results/teacher mamba_target=results/mini_mamba_target
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from types import SimpleNamespace
from typing import Dict

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_cald.bench.asr_speed import plot_speed, run_isolated, speed_table
from speechbrain_cald.data.units import load_char_units
from speechbrain_cald.evaluation.report import count_params, machine, read_stage_times, stage_commands
from speechbrain_cald.evaluation.wer import corpus_wer, hyps_folder, start_hyps_folder, write_hyps
from speechbrain_cald.files import atomic_write
from train import ctc_log_probs, dataio_prepare, transcripts, validate_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SETS = {  # name -> (manifest, batch size); long-form recordings go one per pass
    "test": ("test.csv", 16),
    "longform": ("longform.csv", 1),
    "librivox": ("librivox.csv", 1),
}
SET_TITLES = {"test": "test (unseen voices)", "longform": "long-form (30-120 s)", "librivox": "LibriVox (real speech)"}


def load_model(folder: str):
    """``(hparams namespace, model in eval mode)`` from ``folder``/hyperparams.yaml + model.ckpt."""
    for name in ("hyperparams.yaml", "model.ckpt"):
        if not os.path.exists(os.path.join(folder, name)):
            raise FileNotFoundError(f"model folder '{folder}' has no {name}: train it first (stage 2 or 3)")
    with open(os.path.join(folder, "hyperparams.yaml")) as f:
        hp = load_hyperpyyaml(f)
    model = hp["model"]
    model.load_state_dict(torch.load(os.path.join(folder, "model.ckpt"), map_location="cpu", weights_only=True))
    return SimpleNamespace(**hp), model.eval()


def transcribe(model, hp, dataset, batch_size: int, searcher):
    """Transcripts of ``dataset`` (sorted by duration): ids, refs, ``{"greedy": hyps, "lm": hyps}``."""
    loader = sb.dataio.dataloader.make_dataloader(dataset.filtered_sorted(sort_key="duration"), batch_size=batch_size)
    ids, refs, hyps = [], [], {"greedy": [], "lm": []}
    with torch.no_grad():
        for batch in loader:
            wavs, wav_lens = batch.sig
            log_probs = ctc_log_probs(model, hp, wavs, wav_lens)
            hyps["greedy"] += transcripts(log_probs, torch.round(wav_lens * log_probs.shape[1]).long(), hp.units)
            hyps["lm"] += searcher(log_probs, wav_lens)
            ids += batch.id
            refs += batch.wrd
    return ids, refs, hyps


def load_searcher(decode_yaml: str, lm_path: str, units, overrides: str = ""):
    """The LM beam search of ``decode_yaml`` over ``units``' labels (clear error without the LM)."""
    if not os.path.exists(lm_path):
        raise FileNotFoundError(f"word LM '{lm_path}' does not exist: run stage 1 (units + LM) first")
    with open(decode_yaml) as f:
        dec = load_hyperpyyaml(f, {"lm_path": lm_path, **(load_hyperpyyaml(overrides) if overrides else {})})
    # read the label maps directly: encoding a label (get_blank_index) before the
    # per-model expect_len in main() logs SpeechBrain's "expect_len was never called"
    vocab = [units.ind2lab[i] for i in range(len(units.ind2lab))]
    return dec["searcher"](vocab_list=vocab, blank_index=units.lab2ind[units.blank_label])


def speed_factory(folder: str):
    """For bench.asr_speed: ``encode`` = the model's encoder (TransformerASR or student) on CNN outputs for N s of audio."""
    hp, model = load_model(folder)

    def make_input(seconds: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        wav = 0.1 * torch.randn(1, int(seconds * hp.sample_rate), generator=g)
        with torch.no_grad():
            return model.CNN(hp.normalize(hp.compute_features(wav), torch.ones(1)))

    lens = torch.ones(1)
    return (lambda x: model.encoder(x, lens)), make_input


def training_record(folder: str) -> Dict:
    """``training.json`` written by train.py (what the model saw, fit time), or {}."""
    path = os.path.join(folder, "training.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def architecture(name: str) -> str:
    """Models named ``<architecture>_<guide>[+variant]`` share an architecture per prefix (timed once)."""
    return name.split("_", 1)[0]


# the BiMamba2 student under each guide: where its networks start (CALD's Table 1)
GUIDE_ROWS = (
    ("unguided", "pretrained", "none: task loss only"),
    ("target", "fine-tuned", "the fine-tuned teacher, frozen"),
    ("trajectory", "pretrained", "a copy of the pretrained model fine-tuned alongside"),
    ("waypoint", "pretrained", "the teacher's fine-tuning snapshots, spread over the run"),
    ("hybrid", "fine-tuned", "target, then the layer term off"),
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_folder", required=True)
    p.add_argument("--exp_folder", required=True)
    p.add_argument("--models", nargs="+", required=True, help="name=folder ...; the first is the reference (teacher)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--decode_hparams", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "hparams", "decode.yaml"))
    p.add_argument("--decode_overrides", default="", help='YAML overrides for the decoder, e.g. "alpha: 0.5"')
    p.add_argument("--lm", default="", help="word LM (ARPA); default: <data_folder>/lm_3gram.arpa")
    p.add_argument("--bench_seconds", type=float, nargs="+", default=[10, 30, 60, 120])
    p.add_argument("--bench_repeats", type=int, default=2)
    p.add_argument("--results_md", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--stage_times", default="")
    p.add_argument("--command", default="bash recipes/mini/ASR/run.sh", help="the command line to show in RESULTS.md")
    p.add_argument("--notes", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_notes.md"),
                   help="hand-written analysis included in RESULTS.md when the file exists")
    args = p.parse_args(argv)
    t_start = time.time()
    models = dict(m.split("=", 1) for m in args.models)
    units = load_char_units(os.path.join(args.data_folder, "units.txt"))
    searcher = load_searcher(args.decode_hparams, args.lm or os.path.join(args.data_folder, "lm_3gram.arpa"), units,
                             args.decode_overrides)

    manifests = {s: os.path.join(args.data_folder, SETS[s][0]) for s in args.sets}
    manifests = {s: p for s, p in manifests.items() if os.path.exists(p)}  # e.g. LibriVox without pocketsphinx-testdata
    wers: Dict[str, Dict[str, Dict[str, float]]] = {}
    params: Dict[str, tuple] = {}
    validated_rates = set()
    out_dirs = {name: hyps_folder(folder, args.data_folder) for name, folder in models.items()}
    for out_dir in out_dirs.values():  # before anything can fail: no earlier run's files survive a crash
        start_hyps_folder(out_dir, args.data_folder)
    for name, folder in models.items():
        hp, model = load_model(folder)
        units.expect_len(hp.output_neurons)  # the model's head and the units agree
        hp.units = units
        data_hp = {"data_folder": args.data_folder, "sample_rate": hp.sample_rate}
        if hp.sample_rate not in validated_rates:  # every bad row named before any decoding
            validate_data(data_hp, manifests)
            validated_rates.add(hp.sample_rate)
        params[name] = (count_params(model.encoder), count_params(model), os.path.getsize(os.path.join(folder, "model.ckpt")))
        wers[name] = {"lm": {}, "greedy": {}}
        out_dir = out_dirs[name]
        for set_name, csv_path in manifests.items():
            ds = dataio_prepare(data_hp, None, {set_name: csv_path}, with_tokens=False)[set_name]
            ids, refs, hyps = transcribe(model, hp, ds, SETS[set_name][1], searcher)
            for decoder, suffix in (("lm", ""), ("greedy", "_greedy")):
                wers[name][decoder][set_name] = corpus_wer(ids, refs, hyps[decoder]).wer
                write_hyps(os.path.join(out_dir, f"{set_name}{suffix}.csv"), ids, refs, hyps[decoder])
        print(f"{name:22s} WER " + "  ".join(f"{s} {w:6.2f} (greedy {wers[name]['greedy'][s]:6.2f})"
                                              for s, w in wers[name]["lm"].items()), flush=True)

    speed, timed = {}, set()
    factory = f"{os.path.abspath(__file__)}:speed_factory"
    for name, folder in models.items():
        if architecture(name) in timed:  # another guide or variant of the same student: same encoder
            continue
        timed.add(architecture(name))
        speed[name] = run_isolated(factory, folder, args.bench_seconds, args.bench_repeats)
        print(f"{name:22s} encoder ms: " + "  ".join(f"{r['seconds']:g}s {r['ms']:.0f}" for r in speed[name]), flush=True)
    training = {name: training_record(folder) for name, folder in models.items()}
    pretrained = training_record(os.path.join(args.exp_folder, "pretrained"))  # stage 2's pre-training run
    if pretrained:
        training = {"pretrained (stage 2)": pretrained, **training}

    md_dir = os.path.dirname(os.path.abspath(args.results_md))
    png = plot_speed(speed, os.path.join(md_dir, "speed_vs_length.png"))
    copy = os.path.join(args.exp_folder, "speed_vs_length.png")
    if os.path.abspath(copy) != os.path.abspath(png):
        shutil.copy(png, copy)
    eval_seconds = time.time() - t_start
    report = render_results(args, models, wers, params, speed, eval_seconds, training)
    with atomic_write(args.results_md) as f:
        f.write(report.markdown)
    print("\n" + report.summary)
    print(f"\nRESULTS: {args.results_md}\nplot:    {png}\n"
          f"hypotheses: <model folder>/{os.path.relpath(hyps_folder('.', args.data_folder))}/<set>[_greedy].csv")
    return 0


def render_results(args, models, wers, params, speed, eval_seconds, training=None):
    """RESULTS.md text and the one-screen summary."""
    names = list(models)
    sets = [s for s in args.sets if any(s in wers[n]["lm"] for n in names)]
    ref = names[0]
    longest = max(args.bench_seconds)
    training = training or {}
    timed_as = {architecture(n): n for n in speed}

    def ms_at(name, sec):
        runs = speed.get(name) or speed.get(timed_as.get(architecture(name)), [])
        return next((r["ms"] for r in runs if r["seconds"] == sec), float("nan"))

    def saw(name):
        rec = training.get(name) or {}
        if not rec:
            return "—", "—"
        what = (f"{rec['train_utterances']:,} utts of {rec['train_csv']} x {rec['epochs']} epoch"
                f"{'s' if rec['epochs'] != 1 else ''}, {rec['optimizer_steps']:,} steps")
        return what, f"{rec['fit_seconds']:.0f}"

    def wer_cells(name, set_names):
        return [f"{wers[name]['lm'][s]:.2f} ({wers[name]['greedy'][s]:.2f})" if s in wers[name]["lm"] else "—"
                for s in set_names]

    def guides_table():
        lines = ["| BiMamba2 student | student starts from | teacher | test (unseen voices) | long-form (30-120 s) "
                 "| training s | saw |", "|---|---|---|---:|---:|---:|---|"]
        what, secs = saw(ref)
        lines.append(f"| {ref} (Std.: the pretrained model fine-tuned) | pretrained | — | "
                     + " | ".join(wer_cells(ref, ("test", "longform"))) + f" | {secs} | {what} |")
        rows = 0
        for guide, start, teacher in GUIDE_ROWS:
            # the guide's student, or a variant of it (mamba_<guide>+<key>=<value>)
            found = [n for n in names if n == f"mamba_{guide}" or n.startswith(f"mamba_{guide}+")]
            for n in found:
                rows += 1
                what, secs = saw(n)
                label = guide + (f" ({n.split('+', 1)[1].replace('-', ' = ', 1)})" if "+" in n else "")
                lines.append(f"| {label} | {start} | {teacher} | " + " | ".join(wer_cells(n, ("test", "longform")))
                             + f" | {secs} | {what} |")
        return "\n".join(lines) if rows else "(no BiMamba2 student was evaluated)"

    def training_table():
        lines = ["| model | training s | saw |", "|---|---:|---|"]
        for n in [k for k in training if k not in names] + names:
            what, secs = saw(n)
            lines.append(f"| {n} | {secs} | {what} |")
        return "\n".join(lines)

    def wer_table(decoder):
        lines = ["| model | encoder params (unique) | model.ckpt | " + " | ".join(SET_TITLES[s] for s in sets)
                 + f" | encoder ms at {longest:g} s |", "|---|---:|---:|" + "---:|" * len(sets) + "---:|"]
        for n in names:
            cells = [f"{wers[n][decoder][s]:.2f}" if s in wers[n][decoder] else "—" for s in sets]
            share = f" ({100 * params[n][0] / params[ref][0]:.0f}%)" if n != ref else ""
            lines.append(f"| {n} | {params[n][0] / 1e6:.2f} M{share} | {params[n][2] / 2**20:.1f} MB | " + " | ".join(cells)
                         + f" | {ms_at(n, longest):,.0f} |")
        return "\n".join(lines)

    times = read_stage_times(args.stage_times)
    time_lines = ["| stage | seconds |", "|---|---:|"] + [f"| {k.replace(chr(9), ': ', 1)} | {v:.0f} |" for k, v in times.items()]
    total = sum(v for k, v in times.items() if not k.startswith("4\t")) + eval_seconds
    time_lines.append(f"| 4: evaluation (this run) | {eval_seconds:.0f} |")
    time_lines.append(f"| **total, stages 0-4** | **{total:.0f}** ({total / 60:.1f} min) |")

    checks = []
    t_wer = wers[ref]["lm"].get("test")
    if t_wer is not None:
        checks.append(("teacher test WER <= 10% (LM decoding)", t_wer <= 10,
                       f"{t_wer:.2f}%; greedy {wers[ref]['greedy']['test']:.2f}%"))
    if t_wer is not None and "test" in wers.get("mamba_target", {}).get("lm", {}):
        rel = wers["mamba_target"]["lm"]["test"] / t_wer - 1
        checks.append(("mamba_target within 10% relative of the teacher's test WER (unseen voices)", rel <= 0.10,
                       f"{100 * rel:+.1f}%: {wers['mamba_target']['lm']['test']:.2f} vs {t_wer:.2f}"))
    for n in names[1:]:
        if n.startswith(("mamba", "residual")) and n.endswith("_target") and "test" in wers[n]["lm"] and t_wer is not None:
            gap = wers[n]["lm"]["test"] - t_wer
            gap_greedy = wers[n]["greedy"]["test"] - wers[ref]["greedy"]["test"]
            checks.append((f"{n} within 2 WER points of the teacher", gap <= 2,
                           f"{gap:+.2f} points; greedy {gap_greedy:+.2f}"))
        if n.startswith("residual"):
            share = params[n][0] / params[ref][0]
            checks.append((f"{n} encoder <= 40% of the teacher's unique parameters", share <= 0.40,
                           f"{100 * share:.1f}%: {params[n][0]:,} of {params[ref][0]:,}"))
        if not n.startswith(("mamba", "linformer")) or n not in speed:
            continue  # sharing students keep attention: smaller, not faster; other guides: same encoder
        checks.append((f"{n} encoder faster than the teacher at {longest:g} s", ms_at(n, longest) < ms_at(ref, longest),
                       f"{ms_at(n, longest):,.0f} vs {ms_at(ref, longest):,.0f} ms"))
    if times:
        checks.append(("whole run (stages 0-4) <= 25 min", total <= 1500, f"{total / 60:.1f} min"))
    check_lines = [f"- {'met' if ok else '**MISSED**'}: {what} ({val})" for what, ok, val in checks]

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = ""
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = f"## Notes (from {os.path.basename(args.notes)})\n\n{f.read().strip()}\n\n"
    md = f"""# Mini ASR recipe: results

Measured {date} on {machine()}.
Timings on a shared machine are noisy; compare rows of the same run.

## Word error rate (%), corpus-level (SpeechBrain ErrorRateStats = jiwer)

Decoded by CTC prefix beam search fused with a word 3-gram of the training transcripts,
whose vocabulary is the lexicon (`speechbrain_cald.decoders`; LM from stage 1, weights in
`hparams/decode.yaml`):

{wer_table("lm")}

The same CTC outputs decoded greedily (no lexicon, no LM):

{wer_table("greedy")}

Per-utterance hypotheses: `<model folder>/hyps/<data folder name>-<hash>/<set>.csv` (LM) and `<set>_greedy.csv`. Long-form recordings go
through the encoder in one pass. LibriVox is real human speech, out of domain (reported,
never tuned to).

## The BiMamba2 student under each guide

WER (%) with the LM decoder (greedy in brackets). "pretrained" is stage 2's pre-training
run (other sentences, other voices), "fine-tuned" the teacher; training seconds are each
model's `fit()` (validation included) on this machine:

{guides_table()}

## What each model saw

{training_table()}

## Encoder inference time (median ms) and peak memory rise (MB) vs audio length

Batch 1, no grad, the Transformer/student encoder only (features and CNN front-end
computed beforehand); each model measured in its own process; the guides and variants of
one student share its encoder and are timed once ({", ".join(speed)}).

{speed_table(speed)}

![encoder time vs audio length](speed_vs_length.png)

## Targets

{chr(10).join(check_lines)}

{notes}## Stage timings

{chr(10).join(time_lines)}

## Commands

```
{args.command}
```
What run.sh ran, in order, from `recipes/mini/ASR` (its `results/commands.sh`; data and result paths shown relative to the repository root):
```
{stage_commands(args.exp_folder, REPO_ROOT)}
```
"""
    width = max(len(n) for n in names)
    summary = ["=" * 78, "Mini ASR recipe: summary (WER %, lexicon + 3-gram beam search; test greedy in the last column)",
               "-" * 78,
               f"{'model':{width}s} " + " ".join(f"{s:>9s}" for s in sets) + f" {'ms@' + format(longest, 'g') + 's':>9s}"
               + f" {'greedy':>9s}"]
    for n in names:
        summary.append(f"{n:{width}s} " + " ".join(f"{wers[n]['lm'].get(s, float('nan')):9.2f}" for s in sets)
                       + f" {ms_at(n, longest):9.0f} {wers[n]['greedy'].get('test', float('nan')):9.2f}")
    summary += ["-" * 78] + [f"{'ok  ' if ok else 'MISS'} {what}: {val}" for what, ok, val in checks] + ["=" * 78]
    return SimpleNamespace(markdown=md, summary="\n".join(summary))


if __name__ == "__main__":
    sys.exit(main())
