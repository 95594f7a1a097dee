"""speechbrain-cald: fast linear-time and weight-shared students from pretrained transformers.

Subpackages
-----------
nnet     : family-agnostic layers (Mamba2, Mamba, BiMamba2, Linformer, sharing layers)
convert  : model surgery, teacher -> student, one registry entry per model family
distill  : taps, losses, guides and ``DistillBrain``
tasks    : heads and objectives (CTC, classification, causal LM)
data     : corpus helpers, the synthetic mini corpus
bench    : speed / memory benchmarks, result tables and plots
"""

__version__ = "0.1.0"
