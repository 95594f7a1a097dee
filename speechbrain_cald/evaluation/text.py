"""Stage 4 of the text recipes: metrics of every model, truncation, full length, speed, RESULTS.md.

Each model folder holds SpeechBrain's ``hyperparams.yaml`` (the architecture,
conversion included) and ``model.ckpt`` (train.py's best checkpoint). For
every evaluated split of the prepared corpus (``<exp>/data/corpus.json``):

- the corpus's metrics, each computed twice (``text_metrics``: ours and
  scikit-learn / SciPy), with the majority class of the training split as a
  baseline for classification; predictions go to
  ``<model folder>/predictions_<split>.csv``;
- how many examples each model's ``max_length`` truncated;
- with ``--full_length``, again on every token for the models that can read
  them: students without a length limit (BiMamba2: its position table tiled,
  ``convert.positions``), Linformer up to its projections' length; the
  transformer teacher is what it is, truncated at its position limit;
- inference time and peak memory vs length in tokens (``bench.speed``, one
  process per model, batch 1; a model is timed up to what it can take, the
  teacher past its learned positions with the table tiled, for the cost only);
- ``<model folder>/inference/``: the model and tokenizer as a transformers
  folder (students with ``save_student``, loadable by ``convert.load_student``).

    python -m speechbrain_cald.evaluation.text --manifest_folder results/sst2/data \\
        --models teacher=results/sst2/teacher linformer_target=results/sst2/glue_linformer_target \\
        --results_md results/sst2/RESULTS.md --title "GLUE SST-2"
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time
from collections import Counter
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

from speechbrain_cald.bench.speed import plot_speed, run_isolated, speed_table
from speechbrain_cald.convert.positions import extend_positions, max_tokens
from speechbrain_cald.data.text_classification_corpus import CorpusInfo, load_corpus_info, read_text_manifest
from speechbrain_cald.data.text_dataset import TokenizedText, collate_text, label_ids
from speechbrain_cald.evaluation.report import count_params, machine, read_stage_times, stage_commands, stage_time_lines
from speechbrain_cald.inference import load_trained_model
from speechbrain_cald.nnet.linformer import LinformerAttention
from speechbrain_cald.tasks.text_classification import check_max_length, predictions
from speechbrain_cald.tasks.text_metrics import METRICS, compute_metrics, task_score

__all__ = ["evaluate_model", "length_limit", "load_text_model", "main", "speed_factory"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_text_model(folder: str):
    """``(hparams, model in eval mode, tokenizer)`` from ``folder``'s hyperparams.yaml + model.ckpt."""
    hp, model = load_trained_model(folder)
    return hp, model, hp["tokenizer"]


def length_limit(model: torch.nn.Module) -> Optional[int]:
    """Tokens a model can read in full-length evaluation; None: any number.

    A transformer (no ``cald_conversion``) keeps its learned positions; a
    Linformer student its projections' ``max_len``; other students (BiMamba2)
    have no limit, their position table being tiled when needed.
    """
    if getattr(model, "cald_conversion", None) is None:
        return max_tokens(model)
    limits = [m.max_len for m in model.modules() if isinstance(m, LinformerAttention)]
    return min(limits) if limits else None


def _token_batches(lengths: List[int], batch_tokens: int) -> List[List[int]]:
    """Indices sorted by length, grouped so that a padded batch holds at most ``batch_tokens`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def evaluate_model(model, data: TokenizedText, corpus: CorpusInfo, pad_id: int, batch_tokens: int = 2048):
    """``(metrics, predictions)`` of ``model`` on ``data`` (batched by length, no grad)."""
    collate = collate_text(pad_id)
    preds: List = [None] * len(data)
    with torch.no_grad():
        for batch_ids in _token_batches(data.lengths(), batch_tokens):
            batch = collate([data[i] for i in batch_ids])
            logits = model(**batch.model_inputs()).logits
            for i, p in zip(batch_ids, predictions(logits, corpus.regression)):
                preds[i] = p
    return compute_metrics(corpus.metrics, preds, data.labels), preds


def _write_predictions(path: str, data: TokenizedText, preds: List, corpus: CorpusInfo) -> None:
    names = corpus.labels
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ID", "label", "prediction", "tokens"])
        for i, p in enumerate(preds):
            label, pred = data.labels[i], p
            if names is not None:
                label, pred = names[label], names[pred]
            writer.writerow([data.ids[i], label, pred, data.full_lengths[i]])


def _export_inference(folder: str, model, tokenizer) -> str:
    from speechbrain_cald.convert import save_student

    out = os.path.join(folder, "inference")
    if getattr(model, "cald_conversion", None) is not None:
        save_student(model, out)
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def speed_factory(folder: str):
    """For ``bench.speed``: ``encode`` = the whole classifier on ``n`` tokens (batch 1)."""
    _, model, tokenizer = load_text_model(folder)
    vocab = len(tokenizer)
    limit = length_limit(model)
    transformer = getattr(model, "cald_conversion", None) is None

    def make_input(tokens: float) -> torch.Tensor:
        n = int(tokens)
        if limit is None or transformer:
            extend_positions(model, n)  # the teacher past its positions: timed for the cost only
        g = torch.Generator().manual_seed(0)
        return torch.randint(min(5, vocab - 1), vocab, (1, n), generator=g)

    return (lambda x: model(input_ids=x, attention_mask=torch.ones_like(x))), make_input


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest_folder", required=True, help="stage 0's folder (<exp>/data with corpus.json)")
    p.add_argument("--models", nargs="+", required=True, help="name=folder ...; the first is the teacher")
    p.add_argument("--splits", nargs="*", default=None, help="default: the corpus's eval splits")
    p.add_argument("--full_length", action="store_true", help="also evaluate on every token where a model can")
    # 2,048: on 2 AMD EPYC cores the teacher and a Linformer student read 2,000 tweets in
    # 25.3 s (process included) against 27.0 at 4,096 and 33.4 at 16,384 (activations in cache)
    p.add_argument("--batch_tokens", type=int, default=2048, help="padded tokens per evaluation batch")
    p.add_argument("--bench_lengths", type=float, nargs="*", default=[128, 512, 2048])
    p.add_argument("--bench_repeats", type=int, default=3)
    p.add_argument("--results_md", required=True)
    p.add_argument("--title", default="Text classification")
    p.add_argument("--stage_times", default="")
    p.add_argument("--exp_folder", default="", help="where run.sh logged commands.sh (default: above the manifests)")
    p.add_argument("--command", default="", help="the command line to show in RESULTS.md")
    p.add_argument("--notes", default="", help="hand-written analysis included in RESULTS.md when the file exists")
    p.add_argument("--target_margin", type=float, default=None,
                   help="target: the teacher at least this many points above the majority class")
    p.add_argument("--target_within", nargs="*", default=[], metavar="NAME=POINTS",
                   help="target: model NAME at most POINTS below the teacher")
    p.add_argument("--no_export", action="store_true", help="do not write <model>/inference/")
    args = p.parse_args(argv)
    t_start = time.time()
    corpus = load_corpus_info(args.manifest_folder)
    splits = args.splits or corpus.eval_splits
    models = dict(m.split("=", 1) for m in args.models)
    rows = {s: read_text_manifest(corpus.csv(args.manifest_folder, s)) for s in splits}
    train_rows = read_text_manifest(corpus.csv(args.manifest_folder, corpus.train_split))
    train_labels = label_ids(train_rows, corpus.labels)

    res = SimpleNamespace(metrics={}, full={}, truncation={}, limits={}, params={}, baseline={})
    if not corpus.regression:
        majority = Counter(train_labels).most_common(1)[0][0]
        for s in splits:
            labels = label_ids(rows[s], corpus.labels)
            res.baseline[s] = compute_metrics(corpus.metrics, [majority] * len(labels), labels)
        res.majority = corpus.labels[majority]
    for name, folder in models.items():
        hp, model, tokenizer = load_text_model(folder)
        if not args.no_export:
            _export_inference(folder, model, tokenizer)  # before any position table is tiled
        max_length = check_max_length(hp.get("max_length"), model)  # as training read it
        res.params[name] = count_params(model)
        res.limits[name] = length_limit(model)
        res.metrics[name], res.truncation[name], res.full[name] = {}, {}, {}
        if name == next(iter(models)):  # what the teacher was trained on
            seen = TokenizedText(train_rows, tokenizer, corpus.labels, max_length, where=corpus.train_split)
            res.train_truncation = (seen.truncated, len(seen), max_length)
        for s in splits:
            data = TokenizedText(rows[s], tokenizer, corpus.labels, max_length, where=s)
            res.truncation[name][s] = (data.truncated, len(data), max_length, max(data.full_lengths))
            values, preds = evaluate_model(model, data, corpus, tokenizer.pad_token_id, args.batch_tokens)
            res.metrics[name][s] = values
            _write_predictions(os.path.join(folder, f"predictions_{s}.csv"), data, preds, corpus)
            if args.full_length and data.truncated and res.limits[name] != max_tokens(model):
                limit = res.limits[name]
                full = TokenizedText(rows[s], tokenizer, corpus.labels, limit, where=s)
                if limit is None:
                    extend_positions(model, max(full.full_lengths))
                values, full_preds = evaluate_model(model, full, corpus, tokenizer.pad_token_id, args.batch_tokens)
                res.full[name][s] = (values, limit)
                _write_predictions(os.path.join(folder, f"predictions_{s}_full.csv"), full, full_preds, corpus)
        print(f"{name:24s} " + "  ".join(f"{s} " + " ".join(f"{k} {v:.2f}" for k, v in res.metrics[name][s].items())
                                           for s in splits), flush=True)

    speed = {}
    if args.bench_lengths:
        factory = "speechbrain_cald.evaluation.text:speed_factory"
        for name, folder in models.items():
            limit = res.limits[name] if name != next(iter(models)) else None
            lengths = [n for n in args.bench_lengths if limit is None or n <= limit]
            speed[name] = run_isolated(factory, folder, lengths, args.bench_repeats) if lengths else []
            print(f"{name:24s} ms: " + "  ".join(f"{r['length']:g} tok {r['ms']:.0f}" for r in speed[name]), flush=True)
    md_dir = os.path.dirname(os.path.abspath(args.results_md))
    os.makedirs(md_dir, exist_ok=True)
    if speed:
        plot_speed(speed, os.path.join(md_dir, "speed_vs_length.png"), title=f"{args.title}: inference time vs length",
                   xlabel="input length (tokens)", memory_title="Peak memory rise vs length")
    eval_seconds = time.time() - t_start
    exp_folder = args.exp_folder or os.path.dirname(os.path.abspath(args.manifest_folder))
    markdown, checks = render(args, corpus, splits, list(models), res, speed, eval_seconds, exp_folder)
    with open(args.results_md, "w") as f:
        f.write(markdown)
    for ok, what, value in checks:
        print(f"{'ok  ' if ok else 'MISS'} {what}: {value}")
    print(f"RESULTS: {args.results_md}")
    return 0


def _count(n: int) -> str:
    """``22.7 M`` for models, the exact count for tiny ones."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def _fmt(values: Dict[str, float], metrics: List[str]) -> str:
    return " / ".join(f"{values[m]:.2f}" for m in metrics)


def render(args, corpus: CorpusInfo, splits, names, res, speed, eval_seconds, exp_folder):
    """RESULTS.md text and the target checks ``[(ok, what, value)]``."""
    metrics = corpus.metrics
    titles = " / ".join(METRICS[m].title for m in metrics)
    teacher = names[0]
    target_split = splits[-1]

    def main_value(name, s=target_split):
        return task_score(res.metrics[name][s])

    head = "| model | parameters | " + " | ".join(f"{s}: {titles}" for s in splits) + f" | {target_split}: vs teacher |"
    lines = [head, "|---|---:|" + "---:|" * len(splits) + "---:|"]
    for n in names:
        gap = "—" if n == teacher else f"{main_value(n) - main_value(teacher):+.2f}"
        lines.append(f"| {n} | {_count(res.params[n])} | "
                     + " | ".join(_fmt(res.metrics[n][s], metrics) for s in splits) + f" | {gap} |")
    if res.baseline:
        lines.append(f"| majority class ('{res.majority}' of {corpus.train_split}) | — | "
                     + " | ".join(_fmt(res.baseline[s], metrics) for s in splits) + " | |")

    trunc = ["| model | " + " | ".join(f"{s}: truncated / examples (max_length)" for s in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for n in names:
        trunc.append(f"| {n} | " + " | ".join(
            f"{t:,} / {total:,} ({length} tokens)" for t, total, length, _ in (res.truncation[n][s] for s in splits)) + " |")
    longest = {s: res.truncation[teacher][s][3] for s in splits}
    cut, total, length = res.train_truncation
    trunc.append(f"\nTraining split ({corpus.train_split}, all rows, the teacher's tokenizer): {cut:,} of {total:,} "
                 f"examples longer than {length} tokens are truncated for training (students see the same tokens).")

    full = ""
    if args.full_length:
        flines = ["| model | length limit | " + " | ".join(f"{s}: {titles}" for s in splits) + " |",
                  "|---|---|" + "---|" * len(splits)]
        for n in names:
            limit = res.limits[n]
            cells = []
            for s in splits:
                if s in res.full[n]:
                    cells.append(_fmt(res.full[n][s][0], metrics))
                else:
                    cells.append(f"= truncated ({_fmt(res.metrics[n][s], metrics)})")
            text = "none (positions tiled)" if limit is None else f"{limit} tokens"
            flines.append(f"| {n} | {text} | " + " | ".join(cells) + " |")
        full = (
            "## Full-length inputs\n\nThe same splits with every token a model can read (longest: "
            + ", ".join(f"{s} {longest[s]:,} tokens" for s in splits)
            + "). BiMamba2 students read whole inputs, their learned position table tiled past its end "
            "(`speechbrain_cald.convert.positions`; trained on truncated inputs only); a Linformer reads up to its "
            "projections' length; the transformer teacher stays truncated at its position limit.\n\n"
            + "\n".join(flines) + "\n\n"
        )

    checks = []
    if args.target_margin is not None and res.baseline:
        gap = main_value(teacher) - task_score(res.baseline[target_split])
        checks.append((gap >= args.target_margin,
                       f"teacher at least {args.target_margin:g} points above the majority class on {target_split}",
                       f"{main_value(teacher):.2f} vs {task_score(res.baseline[target_split]):.2f}: {gap:+.2f}"))
    for spec in args.target_within:
        name, points = spec.rsplit("=", 1)
        if name not in res.metrics:
            raise KeyError(f"--target_within {spec}: no model named '{name}' (models: {names})")
        gap = main_value(teacher) - main_value(name)
        checks.append((gap <= float(points), f"{name} within {points} points of the teacher on {target_split}",
                       f"{main_value(name):.2f} vs {main_value(teacher):.2f}: {-gap:+.2f}"))
    targets = ""
    if checks:
        targets = "## Targets\n\n" + "\n".join(
            f"- {'met' if ok else '**MISSED**'}: {what} ({value})" for ok, what, value in checks) + "\n\n"

    bench = ""
    if speed:
        bench = (
            "## Inference time (median ms) and peak memory rise (MB) vs length\n\n"
            "Batch 1, no grad, the whole classifier on random tokens, each model in its own process. A dash: "
            "longer than the model can read (Linformer: its projections). The teacher is timed past its learned "
            "positions with the table tiled, for the cost of attention only.\n\n"
            f"{speed_table(speed, unit='tokens')}\n\n![time vs length](speed_vs_length.png)\n\n"
        )
    notes = ""
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = f"## Notes (from {os.path.basename(args.notes)})\n\n{f.read().strip()}\n\n"
    counts = ", ".join(f"{s} {n:,}" for s, n in corpus.counts.items())
    labels = "regression score" if corpus.regression else ", ".join(corpus.labels)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    times = stage_time_lines(read_stage_times(args.stage_times), eval_seconds)
    md = f"""# {args.title}: results

Measured {date} on {machine()}.

Corpus: {corpus.name} ({counts}; labels: {labels}). Source: {corpus.notes.get('source', '-')}.
Metrics ({titles}) x 100, each computed twice (ours and scikit-learn / SciPy, which agree);
"vs teacher": difference of the mean of the metrics on {target_split}.

## Scores

{chr(10).join(lines)}

Per-example predictions: `<model folder>/predictions_<split>.csv`.

## Truncation

{chr(10).join(trunc)}

{full}{bench}{targets}{notes}## Stage timings

{chr(10).join(times)}

## Commands

```
{args.command or '(stage 4 run by hand)'}
```
What run.sh ran, in order:
```
{stage_commands(exp_folder, REPO_ROOT)}
```
"""
    return md, checks


if __name__ == "__main__":
    sys.exit(main())
