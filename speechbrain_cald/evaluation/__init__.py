"""evaluation: what every recipe's stage 4 needs.

wer      corpus WER computed twice (SpeechBrain ``ErrorRateStats`` and jiwer, which must agree),
         substitutions / deletions / insertions, per-utterance alignment and hypothesis files
report   machine description, stage timings, logged commands, parameter counts (RESULTS.md parts)
asr      stage 4 of the CTC ASR corpus recipes: export, WER per split (greedy and LM), long
         recordings in one pass, speed and memory vs length, RESULTS.md
text     stage 4 of the text-classification recipes (GLUE, IMDB, mini/Text): the corpus's metrics
         computed twice, truncation counts, full-length inputs, speed and memory vs tokens, RESULTS.md
lm_metrics  perplexity computed twice, LAMBADA and multiple-choice zero-shot accuracy
lm       stage 4 of the LM recipes (``python -m speechbrain_cald.evaluation.lm``): perplexity, zero-shot
         tasks, generation speed and memory vs prompt length, RESULTS.md
lm_decoders  CTC + KenLM beam searches compared on one LM and one set of acoustic outputs
         (``python -m speechbrain_cald.evaluation.lm_decoders``): WER, real-time factor, memory
"""
