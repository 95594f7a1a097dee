"""LM corpora: the Pile's JSON-lines layout read as a stream, errors naming file and line, token shards."""

import json
import os

import numpy as np
import pytest
import zstandard

from speechbrain_cald.data.bpe import train_bpe_tokenizer
from speechbrain_cald.data.text_corpus import (
    CorpusFormatError,
    find_split_files,
    iter_documents,
    prepare_text_corpus,
    read_corpus_manifest,
)
from speechbrain_cald.data.token_blocks import TokenBlocks, prepare_lm_data, shard_paths

DOCS = [f"document {i}: the quick brown fox jumps over {i % 7} lazy dogs" for i in range(40)]


def _jsonl(docs):
    return "".join(json.dumps({"text": d, "meta": {"pile_set_name": "Pile-CC"}}) + "\n" for d in docs)


def _zst(path, text: str):
    with open(path, "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(text.encode()))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "pile"
    (root / "train").mkdir(parents=True)
    (root / "train" / "00.jsonl").write_text(_jsonl(DOCS[:20]))
    _zst(root / "train" / "01.jsonl.zst", _jsonl(DOCS[20:30]))
    _zst(root / "val.jsonl.zst", _jsonl(DOCS[30:35]))
    (root / "test.jsonl").write_text(_jsonl(DOCS[35:]))
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(DOCS * 3, 300, str(folder))
    return str(folder)


def test_zstd_and_plain_files_read_the_same(corpus, tmp_path):
    plain = tmp_path / "x.jsonl"
    plain.write_text(_jsonl(DOCS[:5]))
    packed = tmp_path / "x.jsonl.zst"
    _zst(packed, _jsonl(DOCS[:5]))
    assert list(iter_documents(str(plain))) == list(iter_documents(str(packed))) == [(i + 1, d) for i, d in enumerate(DOCS[:5])]


def test_text_files_split_documents_at_blank_lines(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("first line\nsame document\n\n\nsecond\n")
    assert list(iter_documents(str(path))) == [(1, "first line\nsame document"), (5, "second")]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "ok"', "not valid JSON"),
        ('["text"]', "expected a JSON object, found list"),
        ('{"content": "x"}', 'expected a JSON object with a "text" field, found \\[.content.\\]'),
        ('{"text": 3}', '"text" should be a string, found int'),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_malformed_line_names_file_and_line(tmp_path, line, message, compressed):
    text = _jsonl(DOCS[:2]) + "\n" + line + "\n"  # a blank line 3 is skipped; the bad one is line 4
    path = tmp_path / ("bad.jsonl.zst" if compressed else "bad.jsonl")
    if compressed:
        _zst(path, text)
    else:
        path.write_text(text)
    with pytest.raises(CorpusFormatError, match=f"{path}:4: {message}"):
        list(iter_documents(str(path)))


def test_undecodable_and_corrupt_files(tmp_path):
    bad_utf8 = tmp_path / "a.jsonl"
    bad_utf8.write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(CorpusFormatError, match=f"{bad_utf8}:2: not valid UTF-8"):
        list(iter_documents(str(bad_utf8)))
    corrupt = tmp_path / "b.jsonl.zst"
    corrupt.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "x"}\n' * 50)[:-12] + b"\x00" * 12)
    with pytest.raises(CorpusFormatError, match=f"{corrupt}:\\d+: cannot decompress"):
        list(iter_documents(str(corrupt)))


def test_a_zst_file_cut_short_says_truncated(tmp_path):
    """Issue 24 probe: a .zst cut inside its frame lost its tail silently (cut after a line) or was
    reported as bad JSON (cut inside one); each cut now says truncated, naming the line."""
    text = _jsonl(DOCS[:30])
    packed = zstandard.ZstdCompressor().compress(text.encode())
    streamed = tmp_path / "streamed.jsonl.zst"  # as the zstd CLI writes (no content size), two frames
    with open(streamed, "wb") as f:
        with zstandard.ZstdCompressor().stream_writer(f, closefd=False) as w:
            w.write(text.encode())
        f.write(packed)
    assert len(list(iter_documents(str(streamed)))) == 60  # whole files, one frame or several, still read
    for cut in (len(packed) // 4, len(packed) // 2, len(packed) - 3):
        path = tmp_path / f"cut{cut}.jsonl.zst"
        path.write_bytes(packed[:cut])
        with pytest.raises(CorpusFormatError, match=rf"{path}:\d+: truncated: the file ends inside a zstd frame"):
            list(iter_documents(str(path)))
    path = tmp_path / "cut_second_frame.jsonl.zst"
    path.write_bytes(streamed.read_bytes()[:-5])
    with pytest.raises(CorpusFormatError, match="truncated"):
        list(iter_documents(str(path)))


def test_missing_splits_are_explained(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no train split; expected .*train/\\*.jsonl"):
        find_split_files(str(tmp_path))
    (tmp_path / "train" / "00.jsonl").write_text(_jsonl(DOCS[:2]))
    with pytest.raises(FileNotFoundError, match="no val split; expected .*val.jsonl, val.jsonl.zst or val.txt"):
        find_split_files(str(tmp_path))
    (tmp_path / "val.jsonl").write_text(_jsonl(DOCS[:2]))
    assert find_split_files(str(tmp_path))["test"] == []  # test is optional
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_split_files(str(tmp_path / "nowhere"))


def test_prepare_writes_manifests_then_skips_until_sources_change(corpus, tmp_path, capsys):
    out = tmp_path / "exp" / "data"
    manifests = prepare_text_corpus(str(corpus), str(out))
    rows = read_corpus_manifest(manifests["train"])
    assert [(r["ID"], r["format"], r["documents"]) for r in rows] == [("00", "jsonl", "20"), ("01", "jsonl.zst", "10")]
    assert int(rows[0]["characters"]) == sum(len(d) for d in DOCS[:20])
    assert sorted(manifests) == ["test", "train", "val"]
    prepare_text_corpus(str(corpus), str(out))
    assert "match" in capsys.readouterr().out
    (corpus / "test.jsonl").write_text(_jsonl(DOCS[35:37]) + '{"text": 1}\n')
    with pytest.raises(CorpusFormatError, match="test.jsonl:3"):
        prepare_text_corpus(str(corpus), str(out))


def test_empty_documents_are_counted_and_reported(corpus, tmp_path, caplog):
    """Issue 24 probe: documents with an empty "text" were dropped from the counts without a word."""
    (corpus / "train" / "00.jsonl").write_text(_jsonl(DOCS[:3] + ["", " \n "] + DOCS[3:5] + [""]))
    with caplog.at_level("WARNING", logger="speechbrain_cald.data.text_corpus"):
        manifests = prepare_text_corpus(str(corpus), str(tmp_path / "data"), verbose=False)
    assert read_corpus_manifest(manifests["train"])[0]["documents"] == "5"
    path = corpus / "train" / "00.jsonl"
    assert (f'corpus train: {path}: 3 of 8 documents are empty ("text" empty or blank), skipped: lines 4, 5, 8'
            in caplog.text)
    assert "val" not in caplog.text  # files without empty documents are not mentioned


def test_token_shards_are_the_tokenizer_output_with_eos_between_documents(corpus, tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    out = str(tmp_path / "data")
    meta = prepare_lm_data(str(corpus), out, tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    want = [t for d in DOCS[:30] for t in (*tok(d)["input_ids"], tok.eos_token_id)]
    shard = shard_paths(out, "train")
    got = np.fromfile(shard["bin"], dtype=meta["train"]["dtype"])
    assert got.tolist() == want and meta["train"]["documents"] == 30
    assert [s["documents"] for s in meta["train"]["sources"]] == [20, 10]
    rows = read_corpus_manifest(str(tmp_path / "data" / "train.csv"))
    assert sum(int(r["tokens"]) for r in rows) == len(want)  # stage 1 adds the token counts
    blocks = TokenBlocks(shard["bin"], block_size=16)
    assert len(blocks) == len(want) // 16
    assert blocks[2]["tokens"].tolist() == want[32:48]
    assert len(TokenBlocks(shard["bin"], block_size=16, max_blocks=3)) == 3
    with pytest.raises(ValueError, match="fewer than one block"):
        TokenBlocks(shard["bin"], block_size=10**6)
    # unchanged sources and tokenizer: nothing rewritten
    before = os.stat(shard["bin"]).st_mtime_ns
    prepare_lm_data(str(corpus), out, tokenizer_dir, verbose=False)
    assert os.stat(shard["bin"]).st_mtime_ns == before


def test_a_different_tokenizer_retokenises(corpus, tmp_path, tokenizer_dir):
    out = str(tmp_path / "data")
    first = prepare_lm_data(str(corpus), out, tokenizer_dir, verbose=False)
    other = tmp_path / "other_tokenizer"
    train_bpe_tokenizer(DOCS, 280, str(other))
    second = prepare_lm_data(str(corpus), out, str(other), verbose=False)
    assert second["val"]["signature"]["tokenizer"] != first["val"]["signature"]["tokenizer"]
    assert second["val"]["vocab_size"] == 280
