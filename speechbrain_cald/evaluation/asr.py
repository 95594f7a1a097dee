"""Stage 4 of the CTC ASR corpus recipes (LibriSpeech, TED-LIUM): export, WER, long recordings, speed, RESULTS.md.

For every trained model folder (``hyperparams.yaml`` + ``model.ckpt``, stages 2 and 3):

1. export it as a SpeechBrain ``EncoderASR`` folder, ``<model folder>/inference/``
   (``speechbrain_cald.inference``), and load it back with
   ``EncoderASR.from_hparams`` — every number below comes from that loaded folder;
2. decode each test split greedily and with the KenLM word n-gram
   (``--lm``; ``--lm_decoder`` picks the beam search, see
   ``speechbrain_cald.decoders.kenlm_search``) from the same CTC outputs; the
   corpus WER is computed by SpeechBrain and by jiwer, which must agree; write
   SpeechBrain's alignment files ``wer_<split>.txt`` (LM) and
   ``wer_<split>_greedy.txt`` and ``hyps_<split>.csv`` into
   ``<model folder>/hyps/<data folder tag>/`` (``evaluation.wer.hyps_folder``);
3. decode each long recording of ``--longform`` manifests whole, in one pass
   (batch 1), with its time and peak memory (a model whose recording is longer
   than ``--longform_max_s[name]`` is skipped and the table says so);
4. time the encoder layers vs audio length, each model in its own process
   (``bench.asr_speed``);
5. write RESULTS.md (``--results_md``) and a plot beside it.

    python -m speechbrain_cald.evaluation.asr --exp results --data_root /data/LibriSpeech \\
        --tokens results/data/tokens --lm results/data/lm/word_3gram.arpa \\
        --sets test-clean=results/data/test-clean.csv test-other=results/data/test-other.csv \\
        --models teacher=results/teacher mamba_target=results/librispeech_mamba_target
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

from speechbrain_cald.bench.speed import call_peak_mb
from speechbrain_cald.data.audio import speech_datasets
from speechbrain_cald.data.tokens import load_tokens
from speechbrain_cald.decoders.kenlm_search import LM_DECODERS, kenlm_ctc_searcher
from speechbrain_cald.evaluation.batches import loader_by_seconds
from speechbrain_cald.evaluation import report
from speechbrain_cald.evaluation.wer import corpus_wer, hyps_folder, start_hyps_folder, write_alignments, write_hyps
from speechbrain_cald.inference import export_encoder_asr, load_encoder_asr, load_trained_model
from speechbrain_cald.tasks.ctc import ctc_greedy_transcripts
from speechbrain_cald.tasks.ctc_brain import validate_speech_manifests

__all__ = ["decode", "longform", "main"]


def _frame_lengths(asr, wavs: torch.Tensor, wav_lens: torch.Tensor, frames: int) -> torch.Tensor:
    samples = torch.round(wav_lens.float() * wavs.shape[1]).long()
    return asr.mods.encoder.model.encoder.frame_lengths(samples).clamp(max=frames).cpu()


def decode(asr, tokens, dataset, searcher, batch_seconds: float):
    """Greedy and LM transcripts of a (duration-sorted) dataset: ``ids, refs, {"greedy": [...], "lm": [...]}``."""
    ids, refs, hyps = [], [], {"greedy": [], "lm": []}
    with torch.no_grad():
        for batch in loader_by_seconds(dataset, batch_seconds):
            wavs, wav_lens = batch.sig
            log_probs = asr.encode_batch(wavs, wav_lens).cpu()
            lengths = _frame_lengths(asr, wavs, wav_lens, log_probs.shape[1])
            greedy = ctc_greedy_transcripts(log_probs, lengths, tokens.blank_index)
            hyps["greedy"] += [tokens.decode(seq) for seq in greedy]
            hyps["lm"] += searcher(log_probs, lengths.float() / log_probs.shape[1]) if searcher else [""] * len(greedy)
            ids += batch.id
            refs += batch.wrd
    return ids, refs, hyps


def longform(asr, tokens, dataset, searcher, max_seconds: Optional[float]) -> List[dict]:
    """Each recording of ``dataset`` decoded whole in one pass: WER, time, real-time factor, peak memory."""
    rows = []
    for i in dataset.data_ids:
        seconds = float(dataset.data[i]["duration"])
        if max_seconds is not None and seconds > max_seconds:
            rows.append(dict(id=i, seconds=seconds, skipped=f"longer than {max_seconds:g} s (--longform_max_s)"))
            continue
        item = dataset[dataset.data_ids.index(i)]
        wavs, wav_lens = item["sig"][None], torch.ones(1)
        out = {}

        def run():
            t0 = time.perf_counter()
            with torch.no_grad():
                out["log_probs"] = asr.encode_batch(wavs, wav_lens).cpu()  # .cpu() waits for the GPU
            out["seconds"] = time.perf_counter() - t0

        try:
            peak = _peak_mb(run, asr.device)
        except (RuntimeError, MemoryError) as err:  # out of memory for attention over minutes of audio
            rows.append(dict(id=i, seconds=seconds, skipped=f"failed: {str(err).splitlines()[0][:80]}"))
            continue
        lp = out["log_probs"]
        lengths = _frame_lengths(asr, wavs, wav_lens, lp.shape[1])
        greedy = tokens.decode(ctc_greedy_transcripts(lp, lengths, tokens.blank_index)[0])
        lm = searcher(lp, torch.ones(1))[0] if searcher else ""
        rows.append(dict(id=i, seconds=seconds, ref=item["wrd"], greedy=greedy, lm=lm, encode_s=out["seconds"],
                         peak_mb=peak))
    return rows


def _peak_mb(call, device) -> float:
    """Peak memory a call adds: GPU memory allocated on CUDA, resident memory on the CPU (MB)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return call_peak_mb(call)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_report_arguments(p, title="ASR recipe")
    p.add_argument("--tokens", required=True, help="the tokens folder of stage 1")
    p.add_argument("--longform", nargs="*", default=[], help="name=manifest.csv of whole recordings, decoded in one pass")
    p.add_argument("--longform_max_s", nargs="*", default=[], help="model=seconds: skip that model's recordings longer than this")
    p.add_argument("--lm", default="", help="word n-gram (ARPA or KenLM binary); empty: greedy only")
    p.add_argument("--lm_unigrams", default="", help="word list of a binary LM (its lexicon)")
    # SpeechBrain's searcher had the lowest WER on the same LM, outputs and settings (docs/lm_decoding.md)
    p.add_argument("--lm_decoder", default="speechbrain", choices=LM_DECODERS)
    p.add_argument("--alpha", type=float, default=0.5, help="LM weight")
    p.add_argument("--beta", type=float, default=1.0, help="word insertion bonus")
    p.add_argument("--beam_size", type=int, default=32)
    p.add_argument("--unk_score_offset", type=float, default=-10.0)
    p.add_argument("--sample_rate", type=int, default=16000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where models decode (the speed table is always measured on the CPU)")
    return p


def main(argv=None) -> int:
    t_start = time.time()
    args, models, sets = report.parse_report_arguments(build_parser(), argv)
    long_sets = report.parse_pairs(args.longform, "--longform")
    long_max = {k: float(v) for k, v in report.parse_pairs(args.longform_max_s, "--longform_max_s").items()}
    tokens = load_tokens(args.tokens)
    searcher = None
    if args.lm:
        searcher = kenlm_ctc_searcher(args.lm_decoder, tokens.labels, args.lm, tokens.blank_index, alpha=args.alpha,
                                      beta=args.beta, beam_size=args.beam_size, unk_score_offset=args.unk_score_offset,
                                      unigrams_path=args.lm_unigrams or None, space_token=tokens.space)
    validate_speech_manifests({**sets, **long_sets}, args.data_root, args.sample_rate, tokens,
                              os.path.join(args.exp, "manifest_problems_eval.txt"))
    data = speech_datasets({**sets, **long_sets}, args.data_root, args.sample_rate, text_pipeline=None, text_keys=["wrd"],
                           sort="ascending")
    results: Dict[str, dict] = {}
    savedir = tempfile.mkdtemp(prefix="cald_encoder_asr_")
    for name, folder in models.items():
        _, model = load_trained_model(folder)
        if getattr(model, "ctc_lin", None) is not None and model.ctc_lin.out_features != len(tokens):
            raise ValueError(f"{folder}: the CTC head has {model.ctc_lin.out_features} outputs, {args.tokens} has {len(tokens)} tokens")
        inference = export_encoder_asr(model, tokens, os.path.join(folder, "inference"), note=f"from {os.path.abspath(folder)}")
        size = report.model_size(model, folder)
        del model
        asr = load_encoder_asr(inference, os.path.join(savedir, name), device=args.device)
        res = dict(size=size, wer={"lm": {}, "greedy": {}}, longform={})
        out_dir = hyps_folder(folder, args.data_root)  # per data folder: another corpus copy writes beside
        start_hyps_folder(out_dir, args.data_root)
        for split in sets:
            ids, refs, hyps = decode(asr, tokens, data[split], searcher, args.batch_seconds)
            for kind, suffix in (("lm", ""), ("greedy", "_greedy")):
                if kind == "lm" and searcher is None:
                    continue
                r = corpus_wer(ids, refs, hyps[kind])
                res["wer"][kind][split] = r
                write_alignments(os.path.join(out_dir, f"wer_{split}{suffix}.txt"), r)
                write_hyps(os.path.join(out_dir, f"hyps_{split}{suffix}.csv"), ids, refs, hyps[kind])
        for lname in long_sets:
            rows = longform(asr, tokens, data[lname], searcher, long_max.get(name))
            done = [r for r in rows if "skipped" not in r]
            summary = dict(rows=rows)
            if done:
                ids = [r["id"] for r in done]
                refs = [r["ref"] for r in done]
                for kind, suffix in (("lm", ""), ("greedy", "_greedy")):
                    if kind == "lm" and searcher is None:
                        continue
                    hyps = [r[kind] for r in done]
                    summary[kind] = corpus_wer(ids, refs, hyps)
                    write_alignments(os.path.join(out_dir, f"wer_{lname}{suffix}.txt"), summary[kind])
                    write_hyps(os.path.join(out_dir, f"hyps_{lname}{suffix}.csv"), ids, refs, hyps)
            res["longform"][lname] = summary
        results[name] = res
        wer_line = "  ".join(f"{s} {w.wer:.2f}" for s, w in res["wer"]["lm" if searcher else "greedy"].items())
        print(f"{name:24s} WER {wer_line}  (greedy: " + "  ".join(f"{w.wer:.2f}" for w in res["wer"]["greedy"].values()) + ")",
              flush=True)
        del asr
    speed, png = report.bench_exported_encoders(args, models)
    report.write_results(args.results_md, render(args, models, sets, long_sets, results, speed, png, time.time() - t_start))
    print(f"\nRESULTS: {args.results_md}\nalignments: <model folder>/hyps/<data folder tag>/wer_<split>.txt; "
          "EncoderASR folders: <model folder>/inference/")
    return 0


def render(args, models, sets, long_sets, results, speed, png, eval_seconds) -> str:
    """RESULTS.md text."""
    names = list(models)
    sizes = {n: results[n]["size"] for n in names}

    def wer_table(kind):
        cells = {n: [results[n]["wer"][kind][s].cell() if s in results[n]["wer"][kind] else "—" for s in sets]
                 for n in names}
        return "\n".join(report.model_table(sizes, list(sets), cells))

    parts = report.results_header(
        args.title,
        "Every number comes from the model's exported `inference/` folder loaded by SpeechBrain's "
        "`EncoderASR.from_hparams`. WER is corpus-level, in %, computed by SpeechBrain's `ErrorRateStats` and by "
        "jiwer (which agree); cells are `WER (substitutions/deletions/insertions)`.\n")
    if args.lm:
        parts += ["## WER with the word n-gram\n",
                  f"CTC beam search `{args.lm_decoder}` with KenLM over `{os.path.basename(args.lm)}`: alpha {args.alpha}, "
                  f"beta {args.beta}, beam {args.beam_size}, unk_score_offset {args.unk_score_offset}.\n",
                  wer_table("lm"), ""]
    parts += ["## WER, greedy CTC decoding (no LM)\n", wer_table("greedy"), "",
              "Per-utterance alignments (SpeechBrain's format): `<model folder>/hyps/<data folder tag>/wer_<split>.txt` "
              "(LM) and `wer_<split>_greedy.txt`; hypotheses `hyps_<split>.csv` beside them.\n"]
    for lname in long_sets:
        parts += [f"## {lname}: each recording decoded whole, in one pass\n",
                  f"Batch 1, no grad, on `{args.device}`; time and peak memory rise of the encoder call (weights "
                  "excluded; GPU memory allocated on CUDA, resident memory on the CPU); real-time factor = encoder "
                  "time / audio length.\n",
                  "| model | recordings | audio (s) | WER greedy | WER LM | encoder s | RTF | peak MB (largest) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            s = results[n]["longform"][lname]
            done = [r for r in s["rows"] if "skipped" not in r]
            skipped = [r for r in s["rows"] if "skipped" in r]
            if not done:
                reason = skipped[0]["skipped"] if skipped else "no recordings"
                parts.append(f"| {n} | 0 of {len(s['rows'])} | — | — | — | — | — | skipped: {reason} |")
                continue
            audio = sum(r["seconds"] for r in done)
            enc = sum(r["encode_s"] for r in done)
            lm_cell = s["lm"].cell() if "lm" in s else "—"
            note = f" ({len(skipped)} skipped: {skipped[0]['skipped']})" if skipped else ""
            parts.append(f"| {n} | {len(done)} of {len(s['rows'])}{note} | {audio:.0f} | {s['greedy'].cell()} | {lm_cell} | "
                         f"{enc:.2f} | {enc / audio:.3f} | {max(r['peak_mb'] for r in done):,.0f} |")
        parts.append("")
    parts += report.speed_section(speed, png)
    parts += report.report_tail(args, eval_seconds)
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
