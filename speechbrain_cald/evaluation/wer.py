"""Corpus WER, twice: SpeechBrain's ``ErrorRateStats`` and jiwer must agree before anything is reported.

Example
-------
>>> r = corpus_wer(["a", "b"], ["the cat sat", "a dog"], ["the cat", "a big dog"])
>>> r.wer, (r.substitutions, r.deletions, r.insertions), r.ref_words
(40.0, (0, 1, 1), 5)
>>> r.cell()
'40.00 (0/1/1)'
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
from typing import Sequence

import jiwer
from speechbrain.utils.metric_stats import ErrorRateStats

from speechbrain_cald.files import atomic_write, data_tag

__all__ = [
    "WERResult",
    "WERDisagreement",
    "corpus_wer",
    "hyps_folder",
    "start_hyps_folder",
    "write_alignments",
    "write_hyps",
]


class WERDisagreement(RuntimeError):
    """SpeechBrain and jiwer computed different error counts: nothing is reported."""


@dataclasses.dataclass
class WERResult:
    """A corpus-level WER with its edit counts (and SpeechBrain's stats for the alignment file)."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    sentences: int
    stats: ErrorRateStats = dataclasses.field(repr=False, default=None)

    def cell(self) -> str:
        """``"WER (S/D/I)"`` for a results table."""
        return f"{self.wer:.2f} ({self.substitutions}/{self.deletions}/{self.insertions})"


def corpus_wer(ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str], tol: float = 1e-6) -> WERResult:
    """Corpus WER (%) and S/D/I of ``hyps`` against ``refs`` (words split on whitespace).

    Raises
    ------
    WERDisagreement
        If SpeechBrain's and jiwer's WER or edit counts differ.
    """
    if not (len(ids) == len(refs) == len(hyps)):
        raise ValueError(f"corpus_wer: {len(ids)} ids, {len(refs)} references, {len(hyps)} hypotheses")
    stats = ErrorRateStats()
    stats.append(list(ids), [h.split() for h in hyps], [r.split() for r in refs])
    sb = stats.summarize()
    out = jiwer.process_words(list(refs), list(hyps)) if refs else None
    if out is not None:
        ours = (sb["substitutions"], sb["deletions"], sb["insertions"])
        theirs = (out.substitutions, out.deletions, out.insertions)
        # the same total edits is what must hold; alignments may split them differently
        if abs(sb["error_rate"] - 100.0 * out.wer) > tol or sum(ours) != sum(theirs):
            raise WERDisagreement(
                f"WER disagreement: SpeechBrain ErrorRateStats {sb['error_rate']:.6f} (S/D/I {ours}) vs jiwer "
                f"{100.0 * out.wer:.6f} (S/D/I {theirs})"
            )
    return WERResult(float(sb["error_rate"]), int(sb["substitutions"]), int(sb["deletions"]), int(sb["insertions"]),
                     int(sb["num_scored_tokens"]), int(sb["num_scored_sents"]), stats)


def write_alignments(path: str, result: WERResult) -> str:
    """SpeechBrain's per-utterance alignment file (``wer_<split>.txt``, as its recipes write)."""
    with atomic_write(path) as f:
        result.stats.write_stats(f)
    return path


def hyps_folder(model_folder: str, data_folder: str) -> str:
    """Where a model's hypotheses on one data folder go: ``<model>/hyps/<data name>-<hash of its path>/``.

    Evaluating on another data folder writes beside, never over, the recipe's own.

    Example
    -------
    >>> hyps_folder("exp/m", "/data/a") != hyps_folder("exp/m", "/data/b")
    True
    """
    return os.path.join(model_folder, "hyps", data_tag(data_folder))


def start_hyps_folder(folder: str, data_folder: str) -> None:
    """Empty ``folder`` of an earlier evaluation's files (a crash must not leave them looking current)."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    with atomic_write(os.path.join(folder, "data_folder.txt")) as f:
        f.write(os.path.realpath(data_folder) + "\n")


def write_hyps(path: str, ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> str:
    """Per-utterance CSV: ``ID, word_errors, ref_words, ref, hyp`` (complete or absent: written aside, renamed)."""
    with atomic_write(path, newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ID", "word_errors", "ref_words", "ref", "hyp"])
        for i, r, h in zip(ids, refs, hyps):
            out = jiwer.process_words(r, h) if r.strip() else None
            errors = out.substitutions + out.deletions + out.insertions if out else len(h.split())
            w.writerow([i, errors, len(r.split()), r, h])
    return path

