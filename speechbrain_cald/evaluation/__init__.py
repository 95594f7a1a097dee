"""evaluation: what every recipe's stage 4 needs.

wer      corpus WER computed twice (SpeechBrain ``ErrorRateStats`` and jiwer, which must agree),
         substitutions / deletions / insertions, per-utterance alignment and hypothesis files
report   machine description, stage timings, logged commands, parameter counts (RESULTS.md parts)
asr      stage 4 of the CTC ASR corpus recipes: export, WER per split (greedy and LM), long
         recordings in one pass, speed and memory vs length, RESULTS.md
"""
