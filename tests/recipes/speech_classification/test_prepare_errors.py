"""A malformed index line stops either preparation with an error naming the file and the line."""

import pytest

from speechbrain_cald.data.preparation import CorpusError

# corpus, index file, where the bad line goes (0-based), the line, the error
MALFORMED = [
    ("slurp", "dataset/slurp/train.jsonl", 1, "{not json", r"train.jsonl line 2: not a JSON record"),
    ("slurp", "dataset/slurp/train.jsonl", 1, '{"slurp_id": 5, "intent": "alarm_set"}',
     r"train.jsonl line 2: a SLURP record needs a 'recordings' list"),
    ("slurp", "dataset/slurp/train.jsonl", 1, '{"slurp_id": 5, "recordings": [{"file": "a.flac"}]}',
     r"train.jsonl line 2: the record has neither 'intent' nor"),
    ("voxceleb1", "iden_split.txt", 0, "4 id10001/abc/00001.wav",
     r"iden_split.txt line 1: expected '<1\|2\|3> <speaker>/<video>/<nnnnn>.wav'"),
    ("voxceleb1", "iden_split.txt", 0, "1 id10001/00001.wav",
     r"iden_split.txt line 1: 'id10001/00001.wav' is not <speaker>/<video>/<nnnnn>.wav"),
    ("voxceleb1", "iden_split.txt", 0, "1", r"iden_split.txt line 1: expected"),
]
PREPARE = {"slurp": "prepare_slurp", "voxceleb1": "prepare_voxceleb1"}


@pytest.mark.parametrize("corpus, index, at, bad, message", MALFORMED)
def test_malformed_index_lines_name_file_and_line(request, copy_of, tmp_path, corpus, index, at, bad, message):
    root = copy_of(request.getfixturevalue(f"{corpus}_corpus")[0])
    lines = (root / index).read_text().splitlines()
    (root / index).write_text("\n".join(lines[:at] + [bad] + lines[at:]) + "\n")
    prepare = getattr(request.getfixturevalue(f"{corpus}_prepare"), PREPARE[corpus])
    with pytest.raises(CorpusError, match=message):
        prepare(str(root), str(tmp_path / "data"))
