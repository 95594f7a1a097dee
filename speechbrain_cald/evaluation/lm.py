"""Stage 4 of the LM recipes: evaluate every model, benchmark generation, write RESULTS.md.

For each model (``name=folder``; a folder holding ``inference/``, as train.py
exports, or a transformers checkpoint folder itself, e.g. the pretrained one):

- perplexity on the val and test token shards (``<data>/tokens/<split>.bin``),
  computed two independent ways (ours and transformers' ``labels=`` loss,
  :func:`~speechbrain_cald.evaluation.lm_metrics.perplexity_two_ways`): the run stops
  if they disagree;
- zero-shot accuracy on the task files given (LAMBADA ``--lambada_file``;
  multiple choice ``--choice_files name=path ...``), each skipped with a
  message when not given or absent;
- generation speed and memory vs prompt length
  (:mod:`speechbrain_cald.bench.generation`, one fresh process per model).

Then RESULTS.md (tables, the plot beside it, targets if asked, stage timings,
commands) and a summary on screen.

    python -m speechbrain_cald.evaluation.lm --data_folder exp/data --exp_folder exp \\
        --models pretrained=/models/pythia-1b teacher=exp/teacher mamba_target=exp/pile_mamba_target \\
        --results_md exp/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from speechbrain_cald.bench.generation import generation_table, load_causal_lm, plot_generation, run_isolated
from speechbrain_cald.data.token_blocks import TokenBlocks, load_tokenizer, shard_paths
from speechbrain_cald.evaluation.report import count_params, machine, read_stage_times, stage_commands, stage_time_lines
from speechbrain_cald.evaluation.lm_metrics import lambada_accuracy, multiple_choice_accuracy, perplexity_two_ways

__all__ = ["main", "model_folder"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_folder(folder: str) -> str:
    """``folder/inference`` when train.py exported one there, else ``folder`` (a checkpoint folder)."""
    inference = os.path.join(folder, "inference")
    if os.path.isfile(os.path.join(inference, "config.json")):
        return inference
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    raise FileNotFoundError(
        f"model folder '{folder}': no inference/config.json (train.py's export) nor config.json (a checkpoint)"
    )


def _pairs(values: Sequence[str], what: str) -> Dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{what}: expected name=path, got '{value}'")
        out[name] = path
    return out


def _count_parameters(model: torch.nn.Module) -> Tuple[int, int]:
    """(all parameters, those of the attentions / token mixers)."""
    mixing = sum(p.numel() for n, p in model.named_parameters() if ".attention." in n)
    return count_params(model), mixing


def evaluate_models(args, models: Dict[str, str]) -> Dict[str, dict]:
    """Perplexities, parameter counts and zero-shot accuracies of every model."""
    results: Dict[str, dict] = {}
    splits = {}
    for split in ("val", "test"):
        bin_path = shard_paths(args.data_folder, split)["bin"]
        if os.path.isfile(bin_path):
            splits[split] = TokenBlocks(bin_path, args.block_size, args.eval_blocks)
        else:
            print(f"perplexity on {split}: skipped (no token shard {bin_path})")
    choice_files = _pairs(args.choice_files, "--choice_files")
    for name, folder in models.items():
        model = load_causal_lm(folder)
        tokenizer = load_tokenizer(folder)
        r: dict = {"folder": folder, "params": _count_parameters(model), "ppl": {}, "zero_shot": {}}
        for split, blocks in splits.items():
            r["ppl"][split] = perplexity_two_ways(model, blocks, args.batch_size, args.device)
        if args.lambada_file and os.path.isfile(args.lambada_file):
            r["zero_shot"]["lambada"] = lambada_accuracy(model, tokenizer, args.lambada_file, args.task_limit, device=args.device)
        for task, path in choice_files.items():
            if os.path.isfile(path):
                r["zero_shot"][task] = multiple_choice_accuracy(model, tokenizer, path, args.task_limit, device=args.device)
        results[name] = r
        ppl = "  ".join(f"{s} ppl {v['ppl']:.2f}" for s, v in r["ppl"].items())
        zs = "  ".join(f"{t} acc {v['acc']:.1f}" for t, v in r["zero_shot"].items())
        print(f"{name:24s} {ppl}  {zs}", flush=True)
        del model
    if not args.lambada_file:
        print("zero-shot LAMBADA: skipped (no --lambada_file given)")
    elif not os.path.isfile(args.lambada_file):
        print(f"zero-shot LAMBADA: skipped ({args.lambada_file} does not exist)")
    for task, path in choice_files.items():
        if not os.path.isfile(path):
            print(f"zero-shot {task}: skipped ({path} does not exist)")
    if not choice_files:
        print("zero-shot multiple choice: skipped (no --choice_files name=path given)")
    return results


def _checks(args, results, speed) -> List[Tuple[str, bool, str]]:
    names = list(results)
    ref = names[0]
    checks = []
    test_ref = results[ref]["ppl"].get("test", {}).get("ppl")
    if args.check_ppl_within is not None and test_ref is not None:
        for n in names[1:]:
            if "target" in n and "test" in results[n]["ppl"]:
                ppl = results[n]["ppl"]["test"]["ppl"]
                gap = 100 * (ppl / test_ref - 1)
                checks.append((f"{n}: test perplexity within {args.check_ppl_within:g}% of {ref}'s",
                               gap <= args.check_ppl_within, f"{ppl:.2f} vs {test_ref:.2f}: {gap:+.1f}%"))
    if args.check_faster_at is not None and ref in speed:
        def tok_s(name):
            return next((r["tok_s"] for r in speed.get(name, []) if r["prompt"] == args.check_faster_at), float("nan"))

        for n in names[1:]:
            if n in speed:
                checks.append((f"{n}: generates faster than {ref} after a {args.check_faster_at:,}-token prompt",
                               tok_s(n) > tok_s(ref), f"{tok_s(n):,.1f} vs {tok_s(ref):,.1f} new tokens/s"))
    return checks


def render(args, results, speed, eval_seconds) -> Tuple[str, str]:
    """RESULTS.md text and the on-screen summary."""
    names = list(results)
    splits = [s for s in ("val", "test") if any(s in results[n]["ppl"] for n in names)]
    ppl_lines = ["| model | parameters (attention / mixers) | " + " | ".join(f"{s} perplexity" for s in splits) + " | tokens scored (" + " / ".join(splits) + ") |",
                 "|---|---:|" + "---:|" * len(splits) + "---:|"]
    for n in names:
        total, mixing = results[n]["params"]
        cells = [f"{results[n]['ppl'][s]['ppl']:.2f}" if s in results[n]["ppl"] else "—" for s in splits]
        counted = " / ".join(f"{results[n]['ppl'][s]['tokens']:,}" for s in splits if s in results[n]["ppl"])
        ppl_lines.append(f"| {n} | {total / 1e6:.2f} M ({mixing / 1e6:.2f} M) | " + " | ".join(cells) + f" | {counted} |")
    tasks = sorted({t for n in names for t in results[n]["zero_shot"]})
    if tasks:
        zs_lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        for n in names:
            cells = []
            for t in tasks:
                v = results[n]["zero_shot"].get(t)
                if v is None:
                    cells.append("—")
                elif "acc_norm" in v:
                    cells.append(f"{v['acc']:.1f} / {v['acc_norm']:.1f}")
                else:
                    cells.append(f"{v['acc']:.1f} (ppl {v['ppl']:.1f})")
            zs_lines.append(f"| {n} | " + " | ".join(cells) + " |")
        items = ", ".join(f"{t}: {next(results[n]['zero_shot'][t]['items'] for n in names if t in results[n]['zero_shot']):,} items" for t in tasks)
        zero_shot = ("Accuracy (%): LAMBADA last word, greedy (target perplexity); multiple choice by "
                     f"log-likelihood / per byte ({items}).\n\n" + "\n".join(zs_lines))
    else:
        zero_shot = "No task files were given (`--lambada_file`, `--choice_files name=path`): skipped."
    times = {k: v for k, v in read_stage_times(args.stage_times).items() if not k.startswith("4\t")}
    time_lines = stage_time_lines(times, eval_seconds)
    total = sum(times.values()) + eval_seconds
    checks = _checks(args, results, speed)
    if args.check_minutes is not None and times:
        checks.append((f"whole run within {args.check_minutes:g} minutes", total <= 60 * args.check_minutes, f"{total / 60:.1f} min"))
    check_text = "\n".join(f"- {'met' if ok else '**MISSED**'}: {what} ({val})" for what, ok, val in checks)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    generation = "Not measured (`--bench_prompt_lengths` empty)."
    if speed:
        generation = f"""transformers `generate`, greedy, batch 1, {args.bench_new_tokens} new tokens after a prompt of real text
(the test split's first tokens); teachers keep a KV cache, students their recurrent states
(`use_cache=True` for both), on {args.device}. Decoding tokens/s = (N - 1) / (t_N - t_1) with t_k the moment the
k-th new token's scores were ready (median over {args.bench_repeats} calls); memory while decoding = the peak rise of
memory during the N - 1 decoding steps above the memory at the first token; cache = keys and values, or the mixers'
states, after the N tokens; "prompt pass" = t_1 and the peak memory it added. Each model in its own process.

{generation_table(speed)}

![generation speed vs prompt length](generation_vs_prompt.png)"""
    md = f"""# {args.title}

Measured {date} on {machine()}.
Timings on a shared machine are noisy; compare rows of the same run.

## Perplexity

Token-level perplexity over blocks of {args.block_size} tokens of each split (every token but a block's first is
predicted from the ones before it in the block); computed by `next_token_objective` and by transformers'
own `labels=` loss, which agreed to within 1e-4 (relative) for every batch and model.

{chr(10).join(ppl_lines)}

## Zero-shot tasks

{zero_shot}

## Generation speed and memory vs prompt length

{generation}

{"## Targets" + chr(10) + chr(10) + check_text + chr(10) + chr(10) if checks else ""}## Stage timings

{chr(10).join(time_lines)}

## Commands

```
{args.command}
```
What run.sh ran, in order (`<exp>/commands.sh`):
```
{stage_commands(args.exp_folder, ROOT)}
```
"""
    width = max(len(n) for n in names)
    lines = ["=" * 78, f"{args.title}: summary", "-" * 78,
             f"{'model':{width}s} " + " ".join(f"{s + ' ppl':>10s}" for s in splits)]
    for n in names:
        lines.append(f"{n:{width}s} " + " ".join(f"{results[n]['ppl'].get(s, {}).get('ppl', float('nan')):10.2f}" for s in splits))
    lines += ["-" * 78] + [f"{'ok  ' if ok else 'MISS'} {what}: {val}" for what, ok, val in checks] + ["=" * 78]
    return md, "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_folder", required=True, help="<exp>/data: token shards of val / test (stages 0-1)")
    p.add_argument("--exp_folder", required=True)
    p.add_argument("--models", nargs="+", required=True, help="name=folder ...; the first is the reference")
    p.add_argument("--results_md", required=True)
    p.add_argument("--title", default="LM recipe: results")
    p.add_argument("--block_size", type=int, default=2048)
    p.add_argument("--eval_blocks", type=int, default=None, help="first N blocks of each split (default: all)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lambada_file", default="", help="LAMBADA as {\"text\": ...} lines")
    p.add_argument("--choice_files", nargs="*", default=[], help="name=path of {ctx, endings|choices, label} lines")
    p.add_argument("--task_limit", type=int, default=None, help="first N items of each task file")
    p.add_argument("--bench_prompt_lengths", type=int, nargs="*", default=[128, 512, 1024, 2000])
    p.add_argument("--bench_new_tokens", type=int, default=32)
    p.add_argument("--bench_repeats", type=int, default=3)
    p.add_argument("--bench_models", nargs="*", default=None, help="names to benchmark (default: all)")
    p.add_argument("--check_ppl_within", type=float, default=None, help="target: *target* students' test ppl within PCT of the first model's")
    p.add_argument("--check_faster_at", type=int, default=None, help="target: students decode faster than the first model at this prompt length")
    p.add_argument("--check_minutes", type=float, default=None, help="target: whole run within this many minutes")
    p.add_argument("--stage_times", default=None)
    p.add_argument("--command", default="(by hand)")
    args = p.parse_args(argv)
    if args.check_faster_at is not None and args.check_faster_at not in args.bench_prompt_lengths:
        args.bench_prompt_lengths.append(args.check_faster_at)

    t0 = time.time()
    models = {name: model_folder(folder) for name, folder in _pairs(args.models, "--models").items()}
    results = evaluate_models(args, models)
    speed = {}
    shard = shard_paths(args.data_folder, "test")["bin"]
    shard = shard if os.path.isfile(shard) else None
    if args.bench_prompt_lengths:
        for name in args.bench_models if args.bench_models is not None else models:
            speed[name] = run_isolated(models[name], args.bench_prompt_lengths, args.bench_new_tokens,
                                       args.bench_repeats, shard, device=args.device)
            print(f"{name:24s} new tokens/s: " + "  ".join(f"{r['prompt']}: {r['tok_s']:.1f}" for r in speed[name]), flush=True)
    md_dir = os.path.dirname(os.path.abspath(args.results_md))
    os.makedirs(md_dir, exist_ok=True)
    if speed:
        plot_generation(speed, os.path.join(md_dir, "generation_vs_prompt.png"))
    md, summary = render(args, results, speed, time.time() - t0)
    with open(args.results_md, "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(args.exp_folder, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"models": results, "generation": speed}, f, indent=1, default=str)
    print("\n" + summary)
    print(f"\nRESULTS: {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
