"""CTC + KenLM beam searches compared on the same LM, acoustic outputs and settings.

``python -m speechbrain_cald.evaluation.lm_decoders --out docs/bench/lm_decoders``

1. Text: definitions of the GNU Collaborative International Dictionary of
   English (Debian's ``dict-gcide``, read offline), lower-cased into sentences;
   the first ``--lm_sentences`` train a word 3-gram (``decoders.ngram``,
   written as ARPA, loaded by KenLM in every searcher), ``--test_sentences``
   later ones are the test set (the LM never saw them).
2. Acoustic outputs: for each test sentence, CTC log-probabilities over
   blank + space + a-z + apostrophe at 50 frames per second (each character one
   peaky frame followed by blanks), with Gaussian noise on the logits
   (``--noise``) so that greedy decoding makes errors for the LM to fix. The
   same tensors go to every searcher.
3. Each searcher (``decoders.kenlm_search.LM_DECODERS``: pyctcdecode,
   SpeechBrain's CTCBeamSearcher, ours) runs in its own process with the same
   alpha, beta, beam, pruning and unknown-word offset: corpus WER (SpeechBrain
   = jiwer), decoding real-time factor (decode time / audio time), LM load
   time and the process's peak resident memory (after - before building the
   searcher, LM included).

Writes ``<out>/results.json`` and ``<out>/results.md``. Timings need a quiet
machine: on a shared one, compare the rows of one run only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np
import torch

__all__ = ["gcide_sentences", "simulated_log_probs", "main"]

GCIDE = "/usr/share/dictd/gcide.dict.dz"
LABELS = ["<blank>", " "] + list("abcdefghijklmnopqrstuvwxyz'")
FRAMES_PER_SECOND = 50


def gcide_sentences(path: str = GCIDE, min_words: int = 4, max_words: int = 20) -> List[str]:
    """Lower-case sentences (a-z and apostrophes) of the GCIDE dictionary text."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install Debian's dict-gcide (apt-get install dict-gcide)")
    with gzip.open(path, "rt", errors="ignore") as f:
        text = f.read()
    out = []
    for chunk in re.split(r"[.;:!?\n]", text):
        words = re.findall(r"[a-z']+", chunk.lower())
        words = [w.strip("'") for w in words if w.strip("'")]
        if min_words <= len(words) <= max_words:
            out.append(" ".join(words))
    return out


def simulated_log_probs(sentence: str, noise: float, rng: np.random.Generator, frames_per_char: int = 3) -> torch.Tensor:
    """``(T, C)`` CTC log-probabilities for ``sentence``: one peaky label frame then blanks per character, plus noise."""
    T = frames_per_char * len(sentence) + 2
    logits = np.zeros((T, len(LABELS)), dtype=np.float32)
    logits[:, 0] = 4.0
    for i, ch in enumerate(sentence):
        t = 1 + frames_per_char * i
        logits[t, 0] = 0.0
        logits[t, LABELS.index(ch)] = 6.0
    logits += rng.normal(0.0, noise, logits.shape).astype(np.float32)
    return torch.log_softmax(torch.from_numpy(logits), dim=-1)


def _rss_mb(key: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _worker(args) -> Dict[str, float]:
    from speechbrain_cald.decoders.kenlm_search import kenlm_ctc_searcher
    from speechbrain_cald.evaluation.wer import corpus_wer

    data = torch.load(args.data, weights_only=True)  # tensors and strings only
    before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    searcher = kenlm_ctc_searcher(args.worker, LABELS, args.lm, 0, alpha=args.alpha, beta=args.beta,
                                  beam_size=args.beam_size, unk_score_offset=args.unk_score_offset,
                                  beam_prune_logp=args.beam_prune_logp, token_prune_min_logp=args.token_prune_min_logp)
    load_s = time.perf_counter() - t0
    hyps = []
    t0 = time.perf_counter()
    for lp in data["log_probs"]:
        hyps += searcher(lp[None], None)
    decode_s = time.perf_counter() - t0
    audio_s = sum(lp.shape[0] for lp in data["log_probs"]) / FRAMES_PER_SECOND
    r = corpus_wer([str(i) for i in range(len(hyps))], data["refs"], hyps)
    return dict(decoder=args.worker, wer=r.wer, sdi=[r.substitutions, r.deletions, r.insertions], decode_s=decode_s,
                rtf=decode_s / audio_s, load_s=load_s, peak_mb=_rss_mb("VmHWM") - before, audio_s=audio_s)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--lm", default="", help="use this ARPA / binary LM instead of estimating one from GCIDE")
    p.add_argument("--lm_sentences", type=int, default=200_000)
    p.add_argument("--test_sentences", type=int, default=200)
    p.add_argument("--noise", type=float, default=1.6)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--beam_size", type=int, default=16)
    p.add_argument("--unk_score_offset", type=float, default=-10.0)
    p.add_argument("--beam_prune_logp", type=float, default=-10.0)
    p.add_argument("--token_prune_min_logp", type=float, default=-8.0)
    p.add_argument("--decoders", nargs="+", default=["pyctcdecode", "speechbrain", "cald"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    sentences = gcide_sentences()
    train = sentences[: args.lm_sentences]
    test = [s for s in sentences[args.lm_sentences:][:: max(1, (len(sentences) - args.lm_sentences) // args.test_sentences)]]
    test = test[: args.test_sentences]
    lm = args.lm or os.path.join(args.out, "gcide_3gram.arpa")
    if not args.lm and not os.path.exists(lm):
        from speechbrain_cald.decoders.ngram import estimate_ngram, write_arpa

        t0 = time.perf_counter()
        write_arpa(estimate_ngram(train, order=3), lm)
        print(f"3-gram of {len(train):,} GCIDE sentences -> {lm} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(args.seed)
    data = dict(refs=test, log_probs=[simulated_log_probs(s, args.noise, rng) for s in test])
    data_path = os.path.join(args.out, "acoustic_outputs.pt")
    torch.save(data, data_path)
    from speechbrain_cald.evaluation.wer import corpus_wer
    from speechbrain_cald.tasks.ctc import ctc_greedy_transcripts

    greedy = ["".join(LABELS[i] for i in ctc_greedy_transcripts(lp[None], None)[0]) for lp in data["log_probs"]]
    greedy_wer = corpus_wer([str(i) for i in range(len(test))], test, [" ".join(g.split()) for g in greedy])
    rows = []
    settings = [f"--{k}={getattr(args, k)}" for k in ("alpha", "beta", "beam_size", "unk_score_offset",
                                                        "beam_prune_logp", "token_prune_min_logp")]
    for decoder in args.decoders:
        cmd = [sys.executable, "-m", "speechbrain_cald.evaluation.lm_decoders", "--out", args.out, "--worker", decoder,
               "--data", data_path, "--lm", lm, *settings]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{decoder} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    info = dict(lm=os.path.abspath(lm), lm_mb=os.path.getsize(lm) / 2**20, test_sentences=len(test), noise=args.noise,
                greedy_wer=greedy_wer.wer, settings=settings, rows=rows, command=" ".join(["python -m speechbrain_cald.evaluation.lm_decoders", *(argv if argv is not None else sys.argv[1:])]))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(info, f, indent=1)
    from speechbrain_cald.evaluation.report import machine

    lines = [f"Measured on {machine()}.", "",
             f"LM: `{os.path.basename(lm)}` ({info['lm_mb']:.0f} MB ARPA); {len(test)} test sentences, "
             f"{rows[0]['audio_s']:.0f} s of simulated audio; greedy WER {greedy_wer.wer:.2f}; settings "
             + " ".join(settings), "",
             "| searcher | WER (S/D/I) | decode RTF | decode s | LM + searcher build s | peak memory MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['decoder']} | {r['wer']:.2f} ({'/'.join(map(str, r['sdi']))}) | {r['rtf']:.3f} | "
                     f"{r['decode_s']:.1f} | {r['load_s']:.1f} | {r['peak_mb']:,.0f} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
