"""GLUE readers: every task's distributed layout read back exactly; malformed lines name file and line."""

import json

import pytest

from speechbrain_cald.data.glue import GLUE_TASKS, GlueFormatError, glue_task, prepare_glue, read_glue_split
from speechbrain_cald.data.text_classification_corpus import load_corpus_info, read_text_manifest


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_every_task_reads_back_what_was_written(task, tmp_path, glue_writer):
    written = glue_writer(tmp_path, task)
    for split, expected in written.items():
        rows = read_glue_split(str(tmp_path), task, split)
        assert [(r["text_a"], r["text_b"], r["label"]) for r in rows] == expected
        first_line = 1 if task == "cola" else 2  # CoLA has no header line
        assert rows[0]["ID"] == f"{task}-{split}-{first_line}"
        assert len({r["ID"] for r in rows}) == len(rows)
    assert set(written) == {"train", *glue_task(task).dev_splits}


def test_task_names_labels_and_metrics():
    assert {t: GLUE_TASKS[t].metrics for t in GLUE_TASKS} == {
        "cola": ("mcc",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"), "qqp": ("f1", "accuracy"),
        "stsb": ("pearson", "spearman"), "mnli": ("accuracy",), "qnli": ("accuracy",), "rte": ("accuracy",),
        "wnli": ("accuracy",),
    }
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["mnli"].num_labels == 3
    assert glue_task("STS-B") is GLUE_TASKS["stsb"] and glue_task("CoLA") is GLUE_TASKS["cola"]
    with pytest.raises(KeyError, match="expected one of cola, sst2"):
        glue_task("squad")


def _rewrite_line(path, number, transform):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = transform(lines[number - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    "task, split, line, transform, message",
    [
        ("sst2", "train", 4, lambda s: s + "\textra", r"SST-2/train.tsv:4: expected 2 tab-separated columns as the header, found 3"),
        ("cola", "dev", 3, lambda s: s.split("\t", 1)[1], r"CoLA/dev.tsv:3: expected 4 tab-separated columns, found 3"),
        ("rte", "dev", 5, lambda s: s.rsplit("\t", 1)[0] + "\tmaybe",
         r"RTE/dev.tsv:5: label 'maybe' is not one of \['entailment', 'not_entailment'\]"),
        ("stsb", "train", 2, lambda s: s.rsplit("\t", 1)[0] + "\tfive", r"STS-B/train.tsv:2: score 'five' is not a number"),
        ("stsb", "train", 3, lambda s: s.rsplit("\t", 1)[0] + "\t7.5", r"STS-B/train.tsv:3: score 7.5 is outside \[0.0, 5.0\]"),
        ("mnli", "dev_mismatched", 2, lambda s: "\t".join(s.split("\t")[:12]),
         r"MNLI/dev_mismatched.tsv:2: expected 16 tab-separated columns as the header, found 12"),
        ("qqp", "train", 1, lambda s: s.replace("question1", "q1"),
         r"QQP/train.tsv:1: header column 3 should be 'question1' for qqp, found 'q1'"),
    ],
)
def test_malformed_lines_name_file_and_line(task, split, line, transform, message, tmp_path, glue_writer):
    glue_writer(tmp_path, task)
    path = tmp_path / GLUE_TASKS[task].folder / f"{split}.tsv"
    _rewrite_line(path, line, transform)
    with pytest.raises(GlueFormatError, match=message):
        read_glue_split(str(tmp_path), task, split)


def test_mrpc_header_with_byte_order_mark(tmp_path, glue_writer):
    written = glue_writer(tmp_path, "mrpc")
    path = tmp_path / "MRPC" / "train.tsv"
    path.write_text("\ufeff" + path.read_text(encoding="utf-8"), encoding="utf-8")
    rows = read_glue_split(str(tmp_path), "mrpc", "train")
    assert [r["label"] for r in rows] == [w[2] for w in written["train"]]


def test_missing_file_says_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNLI/\{train,dev_matched,dev_mismatched\}.tsv \(--data_folder is the GLUE root\)"):
        read_glue_split(str(tmp_path), "mnli", "train")


def test_prepare_writes_manifests_and_skips_when_done(tmp_path, glue_writer, capsys):
    written = glue_writer(tmp_path / "glue", "mnli", n=9)
    out = tmp_path / "exp" / "data"
    info = prepare_glue(str(tmp_path / "glue"), "mnli", str(out))
    assert sorted(p.name for p in out.iterdir()) == [
        "corpus.json", "corpus_options.json", "dev_matched.csv", "dev_mismatched.csv", "train.csv"]
    assert (info.valid_split, info.eval_splits, info.counts["dev_mismatched"]) == (
        "dev_matched", ["dev_matched", "dev_mismatched"], 9)
    rows = read_text_manifest(str(out / "dev_mismatched.csv"))
    assert [(r["text_a"], r["text_b"], r["label"]) for r in rows] == written["dev_mismatched"]
    stamp = (out / "train.csv").stat().st_mtime_ns
    again = prepare_glue(str(tmp_path / "glue"), "mnli", str(out))
    assert "skipping preparation" in capsys.readouterr().out
    assert (out / "train.csv").stat().st_mtime_ns == stamp and again.counts == info.counts
    assert load_corpus_info(str(out)).labels == ["contradiction", "entailment", "neutral"]
    assert json.loads((out / "corpus.json").read_text())["options"]["task"] == "mnli"


def test_a_line_that_is_not_utf8_names_file_and_line(tmp_path, glue_writer):
    """Issue 24 probe: a Latin-1 byte raised UnicodeDecodeError at 'position 8191' with no file."""
    glue_writer(tmp_path, "rte")
    path = tmp_path / "RTE" / "train.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"\t", b" caf\xe9\t", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(GlueFormatError) as err:
        read_glue_split(str(tmp_path), "rte", "train")
    assert str(err.value).startswith(f"{path}:4: not valid UTF-8: byte 0xe9 at column ")
    assert "re-encoded" in str(err.value)


def test_empty_texts_are_counted_and_reported(tmp_path, glue_writer, caplog):
    """Issue 24 probe: an example with an empty sentence went into the manifests without a word."""
    glue_writer(tmp_path / "glue", "rte")
    path = tmp_path / "glue" / "RTE" / "dev.tsv"
    for line in (3, 5):
        _rewrite_line(path, line, lambda s: "\t".join(c if i != 2 else " " for i, c in enumerate(s.split("\t"))))
    with caplog.at_level("WARNING", logger="speechbrain_cald.data.glue"):
        info = prepare_glue(str(tmp_path / "glue"), "rte", str(tmp_path / "data"))
    assert info.notes["examples with an empty text (kept)"] == {"train": 0, "dev": 2}
    assert f"GLUE rte dev: 2 of {info.counts['dev']} examples have an empty text" in caplog.text
    assert f"{path} lines 3, 5" in caplog.text
    assert load_corpus_info(str(tmp_path / "data")).notes["examples with an empty text (kept)"]["dev"] == 2
