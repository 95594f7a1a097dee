"""OpenMP's wait policy on a recipe's work: a training step and an evaluation call, per policy.

OpenMP worker threads that finish a parallel region either spin for a while
(``OMP_WAIT_POLICY=ACTIVE``; GNU libgomp, which torch's CPU wheels ship, spins
for a bounded time when the variable is unset) or sleep at once (``PASSIVE``).
Spinning wins when the cores are idle and operator calls are short and many;
on a machine whose cores are shared with other processes the spinning threads
take turns from the ones with work. This script measures both on the mini ASR
recipe's student (``hparams/mini_mamba.yaml`` as published: BiMamba2 in a
4-layer conformer, d_model 144):

- ``train step``: one optimizer step (features, forward, CTC loss, backward,
  AdamW) on a batch of ``--batch`` utterances of ``--seconds`` s;
- ``evaluate``: the model's forward on one ``--eval_seconds`` s recording
  under ``no_grad`` (what evaluate.py does per long-form recording).

Each policy runs in fresh interpreters (the policy is read when libgomp loads),
``--rounds`` times, alternating policies to spread any drift in the machine's
load evenly; the table gives the median of the per-round medians and the load
average before and after. No timed test asserts anything: this is a
measurement to re-run where it matters::

    python -m speechbrain_cald.bench.omp_wait --rounds 3 --out docs/bench/omp_wait_idle.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "recipes" / "mini" / "ASR" / "hparams" / "mini_mamba.yaml"
POLICIES = ("unset", "ACTIVE", "PASSIVE")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, first-call dispatch
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def worker(yaml: str, batch: int, seconds: float, eval_seconds: float, repeats: int) -> Dict[str, float]:
    """Time a training step and an evaluation call in this process (its wait policy as inherited)."""
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.nnet.losses import ctc_loss

    folder = tempfile.mkdtemp()
    overrides = {k: folder for k in ("data_folder", "teacher_folder", "output_folder")}
    with open(yaml) as f:
        hp = load_hyperpyyaml(f, overrides)
    model = hp["model"].train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    rate = hp["sample_rate"]
    wavs = 0.1 * torch.randn(batch, int(seconds * rate), generator=g)
    lens = torch.ones(batch)
    tokens = torch.randint(1, hp["output_neurons"], (batch, int(seconds * 8)), generator=g)

    def train_step():
        feats = hp["normalize"](hp["compute_features"](wavs), lens)
        logits = model(feats, lens)
        # the recipe's CTC objective; every frame and token valid (relative lengths 1)
        loss = ctc_loss(torch.log_softmax(logits.float(), dim=-1), tokens, lens, lens, 0, reduction="mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    long = 0.1 * torch.randn(1, int(eval_seconds * rate), generator=g)

    def evaluate():
        with torch.no_grad():
            model.eval()
            model(hp["normalize"](hp["compute_features"](long), torch.ones(1)), torch.ones(1))
            model.train()

    return {
        "train step": _median_ms(train_step, repeats),
        "evaluate": _median_ms(evaluate, repeats),
        "threads": torch.get_num_threads(),
    }


def run_policy(policy: str, args) -> Dict[str, float]:
    """``worker`` in a fresh interpreter under ``policy`` ('unset' removes the variable)."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-m", "speechbrain_cald.bench.omp_wait", "--worker", "--yaml", str(args.yaml),
           "--batch", str(args.batch), "--seconds", str(args.seconds), "--eval_seconds", str(args.eval_seconds),
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker under OMP_WAIT_POLICY={policy} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def table(results: Dict[str, List[Dict[str, float]]], policies: List[str]) -> str:
    """Markdown: one row per workload, median ms per policy, and each policy against the first."""
    base = policies[0]
    head = "| workload | " + " | ".join(f"{p} (ms)" for p in policies) + " | " + " | ".join(
        f"{p} / {base}" for p in policies[1:]) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(policies) - 1)]
    for work in ("train step", "evaluate"):
        med = {p: statistics.median(r[work] for r in results[p]) for p in policies}
        spread = {p: (min(r[work] for r in results[p]), max(r[work] for r in results[p])) for p in policies}
        cells = [f"{med[p]:,.0f} ({spread[p][0]:,.0f}-{spread[p][1]:,.0f})" for p in policies]
        ratios = [f"{med[p] / med[base]:.2f}" for p in policies[1:]]
        lines.append(f"| {work} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--yaml", default=str(DEFAULT_YAML), help="a mini ASR YAML (default: the BiMamba2 student)")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per policy (alternating)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per process (after one warm-up)")
    p.add_argument("--batch", type=int, default=8, help="utterances per training batch")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per training utterance")
    p.add_argument("--eval_seconds", type=float, default=30.0, help="seconds of the evaluated recording")
    p.add_argument("--out", default="", help="also write the report (markdown) here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.yaml, args.batch, args.seconds, args.eval_seconds, args.repeats)))
        return 0
    load_before = os.getloadavg()
    t0 = time.time()
    results: Dict[str, List[Dict[str, float]]] = {policy: [] for policy in args.policies}
    for round_ in range(args.rounds):
        order = args.policies if round_ % 2 == 0 else list(reversed(args.policies))
        for policy in order:
            results[policy].append(run_policy(policy, args))
            print(f"round {round_ + 1}/{args.rounds} {policy:8s} " + "  ".join(
                f"{k} {v:,.0f} ms" for k, v in results[policy][-1].items() if k != "threads"), flush=True)
    load_after = os.getloadavg()
    threads = results[args.policies[0]][0]["threads"]
    report = "\n".join([
        f"OMP_WAIT_POLICY on the mini ASR student ({Path(args.yaml).name}): median ms (min-max of "
        f"{args.rounds} processes, each the median of {args.repeats} calls)",
        "",
        table(results, args.policies),
        "",
        f"train step: batch {args.batch} x {args.seconds:g} s, forward + CTC + backward + AdamW; "
        f"evaluate: one {args.eval_seconds:g} s recording, no_grad. 'unset' is libgomp's default "
        "(spin for a while, then sleep).",
        f"Machine: {_cpu()}, {os.cpu_count()} cores, torch threads {threads}; load average (1/5/15 min) "
        f"before {' / '.join(f'{x:.2f}' for x in load_before)}, after {' / '.join(f'{x:.2f}' for x in load_after)}; "
        f"{time.time() - t0:.0f} s in all.",
        f"Command: python -m speechbrain_cald.bench.omp_wait {' '.join(argv if argv is not None else sys.argv[1:])}",
    ])
    print("\n" + report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
