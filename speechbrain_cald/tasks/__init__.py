"""tasks: objectives and decoding helpers used by recipes' ``task_loss`` hooks.

ctc             ctc_objective, ctc_greedy_transcripts (SpeechBrain's CTC loss and greedy decoder)
classification  classification_objective, correct_predictions, masked_mean, UtteranceClassifier
classification_metrics  ClassificationScores (accuracy, macro-F1, confusion; cross-checked)
lm              next_token_objective, perplexity, CausalLMBrain (the LM recipes' Brain hooks)
"""

from speechbrain_cald.tasks.classification import (
    UtteranceClassifier,
    classification_objective,
    correct_predictions,
    masked_mean,
)
from speechbrain_cald.tasks.classification_metrics import ClassificationScores, MetricDisagreement
from speechbrain_cald.tasks.ctc import ctc_greedy_transcripts, ctc_objective, relative_lengths
from speechbrain_cald.tasks.lm import next_token_objective, perplexity

__all__ = [
    "ClassificationScores",
    "MetricDisagreement",
    "UtteranceClassifier",
    "masked_mean",
    "classification_objective",
    "correct_predictions",
    "ctc_greedy_transcripts",
    "ctc_objective",
    "next_token_objective",
    "perplexity",
    "relative_lengths",
]
