#!/usr/bin/env python3
"""Train a causal LM on JSON-lines text: continued pre-training of the teacher, or a CALD student.

The YAML decides which. ``hparams/pile_teacher.yaml`` continues the pretrained
GPT-NeoX (Pythia) checkpoint on the corpus (the "Std." baseline; snapshots
kept as waypoints). ``hparams/pile_mamba.yaml`` converts it
(``to_linear_time(mixer="mamba")``, every other weight kept) and trains the
student with next-token cross-entropy + layerwise distillation under its guide.

Data: ``--data_folder`` in the Pile's layout (``train/*.jsonl[.zst]``,
``val.jsonl[.zst]``, ``test.jsonl[.zst]``); the corpus is checked and
tokenised with the checkpoint's own tokenizer into ``<prepared_folder>``
(``<exp>/data``: manifests and token shards, skipped when up to date) through
``run_on_main``, then read as fixed-length blocks from disk.

    python train.py hparams/pile_teacher.yaml --data_folder=/data/pile --pretrained_dir=/models/pythia-1b \\
        --output_folder=results/teacher
    python train.py hparams/pile_mamba.yaml --data_folder=/data/pile --pretrained_dir=/models/pythia-1b \\
        --teacher_folder=results/teacher --output_folder=results/pile_mamba_target [--guide=unguided]

The best model by validation perplexity goes to ``<output_folder>/model.ckpt``
(state_dict) and ``<output_folder>/inference/`` (a transformers folder with the
tokenizer; students via ``speechbrain_cald.convert.save_student``, loadable
with ``load_student`` and ready for ``generate(..., use_cache=True)``).
"""

from __future__ import annotations

import os
import sys

from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_cald.convert import save_student
from speechbrain_cald.data.token_blocks import TokenBlocks, load_tokenizer, prepare_lm_data, shard_paths
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import export_model, start_experiment
from speechbrain_cald.tasks.lm import CausalLMBrain


def export_inference(model, tokenizer_dir: str, folder: str) -> str:
    """``<folder>/inference``: the trained LM with its tokenizer, loadable offline."""
    out = os.path.join(folder, "inference")
    if if_main_process():
        model = unwrap(model)
        if getattr(model, "cald_conversion", None) is not None:
            save_student(model, out)
        else:
            model.save_pretrained(out)
        load_tokenizer(tokenizer_dir).save_pretrained(out)
        print(f"inference model -> {out}")
    return out


def main(argv):
    exp = start_experiment(argv)
    hparams, run_opts = exp.hparams, exp.run_opts
    prepared = hparams["prepared_folder"]
    run_on_main(
        prepare_lm_data,
        kwargs={"data_folder": hparams["corpus_folder"], "save_folder": prepared, "tokenizer_source": hparams["tokenizer_dir"]},
    )
    block = hparams["block_size"]
    train = TokenBlocks(shard_paths(prepared, "train")["bin"], block, hparams.get("train_blocks"))
    valid = TokenBlocks(shard_paths(prepared, "val")["bin"], block, hparams.get("valid_blocks"))
    print(f"training on {len(train):,} blocks of {block} tokens, validating on {len(valid):,}")

    modules = build_modules(hparams)
    vocab = unwrap(modules["model"]).get_input_embeddings().num_embeddings
    if train.meta["vocab_size"] > vocab:
        raise ValueError(
            f"tokenizer of {hparams['tokenizer_dir']} has {train.meta['vocab_size']} tokens but the model's "
            f"embedding only {vocab}: the checkpoint and its tokenizer disagree"
        )
    brain = CausalLMBrain(
        modules=modules,
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        train,
        valid,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    export_model(brain, hparams["output_folder"], min_key="ppl")
    export_inference(brain.modules.model, hparams["tokenizer_dir"], hparams["output_folder"])


if __name__ == "__main__":
    main(sys.argv[1:])
