"""Stage 4 of the utterance-classification recipes (SLURP, VoxCeleb1): export, accuracy, confusions, speed, RESULTS.md.

For every trained model folder (``hyperparams.yaml`` + ``model.ckpt`` +
``label_encoder.txt``, stages 2 and 3):

1. export it as a SpeechBrain ``EncoderClassifier`` folder,
   ``<model folder>/inference/`` (``speechbrain_cald.inference``), and load it
   back with ``EncoderClassifier.from_hparams`` — every number below comes from
   that loaded folder;
2. classify every utterance of each split whole (batches of similar
   durations); accuracy and macro-F1 are computed by ``ClassificationScores``
   and again by SpeechBrain's ``ClassificationStats`` / scikit-learn (or the
   per-class reference), which must agree; per-utterance predictions go to
   ``<model folder>/predictions_<split>.csv``;
3. time the encoder layers vs audio length, each model in its own process;
4. write RESULTS.md (``--results_md``): accuracy and macro-F1 per split and
   model, model sizes, the most confused label pairs, speed and memory vs
   length (and a plot beside it), stage timings and the commands.

    python -m speechbrain_cald.evaluation.classification --exp results --data_root /data/SLURP \\
        --sets devel=results/data/devel.csv test=results/data/test.csv \\
        --models teacher=results/teacher slurp_mamba_target=results/slurp_mamba_target \\
        --results_md results/RESULTS.md --title "SLURP intent classification"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import torch

from speechbrain_cald.data.labels import load_label_encoder
from speechbrain_cald.data.validate import validate_manifests
from speechbrain_cald.evaluation.batches import loader_by_seconds
from speechbrain_cald.evaluation import report
from speechbrain_cald.inference import export_encoder_classifier, load_encoder_classifier, load_trained_model
from speechbrain_cald.tasks.classification_metrics import ClassificationScores
from speechbrain_cald.tasks.utterance import known_label, utterance_dataset

__all__ = ["classify", "main"]


def classify(classifier, dataset, labels: Sequence[str], batch_seconds: float) -> ClassificationScores:
    """Predictions of an ``EncoderClassifier`` on a (duration-sorted) dataset of whole utterances.

    Arguments
    ---------
    classifier : speechbrain.inference.classifiers.EncoderClassifier
        The loaded export.
    dataset : DynamicItemDataset
        ``id``, ``sig``, ``label_id`` (:func:`speechbrain_cald.tasks.utterance.utterance_dataset`).
    labels : sequence of str
        Class names by id.
    batch_seconds : float
        Padded audio seconds per batch.

    Returns
    -------
    ClassificationScores
    """
    scores = ClassificationScores(labels)
    with torch.no_grad():
        for batch in loader_by_seconds(dataset, batch_seconds):
            wavs, wav_lens = batch.sig
            _, _, index, _ = classifier.classify_batch(wavs, wav_lens)
            scores.append(batch.id, index.cpu(), batch.label_id.data[:, 0])
    return scores


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_report_arguments(p, title="Utterance classification")
    p.add_argument("--confusions", type=int, default=10, help="most confused label pairs listed per model")
    return p


def main(argv=None) -> int:
    t_start = time.time()
    args, models, sets = report.parse_report_arguments(build_parser(), argv)
    results: Dict[str, dict] = {}
    savedir = tempfile.mkdtemp(prefix="cald_encoder_classifier_")
    reference_labels = None
    for name, folder in models.items():
        label_file = os.path.join(folder, "label_encoder.txt")
        hparams, model = load_trained_model(folder)
        encoder = load_label_encoder(label_file, expect=model.n_classes)
        labels = [encoder.ind2lab[i] for i in range(len(encoder))]
        if reference_labels is None:
            reference_labels = labels
            validate_manifests(sets, replacements={"data_root": args.data_root}, sample_rate=hparams["sample_rate"],
                               row_checks=[known_label(encoder, label_file)])
        elif labels != reference_labels:
            raise ValueError(f"{folder}: its label encoder differs from the first model's: they were trained on other data")
        inference = export_encoder_classifier(model, label_file, os.path.join(folder, "inference"),
                                              note=f"from {os.path.abspath(folder)}")
        size = report.model_size(model, folder)
        del model
        classifier = load_encoder_classifier(inference, os.path.join(savedir, name))
        res = dict(size=size, scores={}, summary={})
        for split, manifest in sets.items():
            data = utterance_dataset([manifest], args.data_root, encoder, hparams["sample_rate"])
            scores = classify(classifier, data.filtered_sorted(sort_key="duration"), labels, args.batch_seconds)
            res["scores"][split] = scores
            res["summary"][split] = scores.summarize()
            scores.write_predictions(os.path.join(folder, f"predictions_{split}.csv"))
        results[name] = res
        print(f"{name:28s} " + "  ".join(f"{s} accuracy {v['accuracy']:.2f} macro-F1 {v['macro_f1']:.2f}"
                                         for s, v in res["summary"].items()), flush=True)
        del classifier
    speed, png = report.bench_exported_encoders(args, models)
    report.write_results(args.results_md, render(args, models, sets, results, speed, png, time.time() - t_start))
    print(f"\nRESULTS: {args.results_md}\npredictions: <model folder>/predictions_<split>.csv; "
          "EncoderClassifier folders: <model folder>/inference/")
    return 0


def render(args, models: Dict[str, str], sets: Dict[str, str], results: Dict[str, dict], speed, png,
           eval_seconds: float) -> str:
    """RESULTS.md text."""
    names = list(models)
    ref = names[0]
    split_names = list(sets)
    last = split_names[-1]
    lines: List[str] = report.results_header(
        args.title,
        "Every number comes from the model's exported `inference/` folder loaded by SpeechBrain's "
        "`EncoderClassifier.from_hparams`, on whole utterances. Accuracy and macro-F1 (mean F1 over the labels "
        "among the references or the predictions) in %, computed by our code and again by SpeechBrain's "
        "`ClassificationStats` and scikit-learn (or a per-class count), which agree.\n")
    columns = [f"{s}: {metric}" for s in split_names for metric in ("accuracy", "macro-F1")]
    cells = {n: [f"{results[n]['summary'][s][key]:.2f}" for s in split_names for key in ("accuracy", "macro_f1")]
             for n in names}
    lines += ["## Accuracy and macro-F1 per split\n"]
    lines += report.model_table({n: results[n]["size"] for n in names}, columns, cells)
    counts = ", ".join(f"{s} {results[ref]['summary'][s]['n']:,}" for s in split_names)
    lines += ["", f"Corpus `{args.data_root}`; utterances: {counts}. "
                  "Per-utterance predictions: `<model folder>/predictions_<split>.csv`.\n",
              f"## Most confused label pairs ({last})\n",
              "The errors each model makes most often: target label, the label it was taken for, how many "
              "utterances, and their share of the target's utterances.\n"]
    for n in names:
        lines += [f"**{n}**\n", results[n]["scores"][last].confusion_markdown(args.confusions), ""]
    lines += report.speed_section(speed, png)
    lines += report.report_tail(args, eval_seconds)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
