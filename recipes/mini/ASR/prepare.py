#!/usr/bin/env python3
"""Stage 0 of the mini recipe: synthesise the espeak-ng corpus and its manifests.

Writes ``train/valid/test/longform.csv``, ``pretrain.csv`` (the pre-training
corpus: its own sentences and voices, see ``speechbrain_cald.data.mini_corpus``;
``--n_pretrain 0`` leaves it out), ``librivox.csv`` where Debian's
pocketsphinx-testdata is installed, and 16 kHz wavs under ``--data_folder``.
The same options always give the same bytes.

    python prepare.py --data_folder data --n_train 3000 --n_pretrain 2000 --longform 30 60 120
"""

from __future__ import annotations

import argparse
import sys
import time

from speechbrain_cald.data.espeak import EspeakMissingError
from speechbrain_cald.data.librivox import POCKETSPHINX_LIBRIVOX, prepare_librivox
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.data.mini_corpus import MiniCorpusConfig, prepare_mini_corpus


def main(argv=None) -> int:
    defaults = MiniCorpusConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_folder", required=True)
    p.add_argument("--n_train", type=int, default=defaults.n_train)
    p.add_argument("--n_valid", type=int, default=defaults.n_valid)
    p.add_argument("--n_test", type=int, default=defaults.n_test)
    p.add_argument("--n_pretrain", type=int, default=defaults.n_pretrain, help="pre-training utterances (0: none)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--longform", type=float, nargs="+", default=defaults.longform_seconds, help="long-form lengths (s)")
    p.add_argument("--longform_per_duration", type=int, default=defaults.longform_per_duration)
    p.add_argument("--librivox", default=POCKETSPHINX_LIBRIVOX, help="pocketsphinx-testdata LibriVox folder ('' to skip)")
    p.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes")
    args = p.parse_args(argv)

    config = MiniCorpusConfig(
        n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, n_pretrain=args.n_pretrain, seed=args.seed,
        longform_seconds=list(args.longform), longform_per_duration=args.longform_per_duration,
    )
    t0 = time.time()
    try:
        paths = prepare_mini_corpus(args.data_folder, config, workers=args.workers)
    except EspeakMissingError as err:
        print(f"prepare.py: {err}", file=sys.stderr)
        return 1
    librivox = prepare_librivox(args.data_folder, args.librivox) if args.librivox else None
    if librivox:
        paths["librivox"] = librivox
    else:
        print(f"LibriVox test set skipped: {args.librivox or '(disabled)'} not found "
              "(install Debian's pocketsphinx-testdata to add it)")
    for split, path in paths.items():
        rows = read_manifest(path)
        hours = sum(float(r["duration"]) for r in rows) / 3600
        voices = len({r["spk_id"] for r in rows})
        print(f"{split:9s} {len(rows):5d} utterances {hours:6.2f} h {voices:3d} voices -> {path}")
    print(f"corpus ready in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
