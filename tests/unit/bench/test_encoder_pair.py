"""The teacher / student pair benchmark: FLOP counts, paired timing, the table (no timing asserted)."""

import torch

from speechbrain_cald.bench import encoder_pair, mixers
from speechbrain_cald.bench.encoder_pair import MixerSizes, PairRow, minilm_macs_per_token


def test_flop_ratio_follows_length_as_the_issue_states():
    # MiniLM (d 384, FFN 1536) with the default BiMamba2 student: the teacher's cost
    # per token grows with T, the student's does not past one chunk
    student = MixerSizes(d_inner=384, d_state=128, ngroups=1, nheads=6, d_conv=4, chunk_size=128)
    ratio = {T: minilm_macs_per_token(T, 384, 1536, student) / minilm_macs_per_token(T, 384, 1536)
             for T in (64, 512, 1024, 4096, 8192)}
    assert ratio[64] > ratio[512] > ratio[1024] > ratio[4096] > ratio[8192]
    assert ratio[1024] > 1 > ratio[4096]
    assert minilm_macs_per_token(4096, 384, 1536, student) == minilm_macs_per_token(8192, 384, 1536, student)


def test_compare_pair_runs_both_calls_every_round():
    calls = {"t": 0, "s": 0}

    def count(k):
        def call():
            calls[k] += 1
            torch.randn(10).sum()
        return call

    t_ms, s_ms, ratio = encoder_pair.compare_pair(count("t"), count("s"), repeats=4)
    assert calls == {"t": 5, "s": 5}  # one untimed warm-up each
    assert min(t_ms, s_ms, ratio) > 0


def test_table_marks_rows_against_their_bound():
    rows = [PairRow("a", 1, 64, 10.0, 13.0, 1.3, 1.2), PairRow("b", 1, 64, 10.0, 16.0, 1.6, 1.2)]
    lines = encoder_pair.pair_table(rows).splitlines()
    assert lines[2].endswith("| yes |") and lines[3].endswith("| no |")


def test_mixers_cli_runs_the_pair_only_when_asked_or_at_minilm_width():
    parse = lambda *a: mixers.argparse.Namespace(quick=False, encoder=a[0], d_model=a[1])  # noqa: E731
    assert not mixers._wants_encoder_pair(parse("none", 384))
    assert not mixers._wants_encoder_pair(parse("auto", 768))
    assert mixers._wants_encoder_pair(parse("minilm", 768))
