"""The offline loading rule: a hub id or a missing directory fails clearly."""

import pytest

from speechbrain_cald.pretrained import OfflineSourceError, local_source


def test_local_directory_resolves(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert local_source(tmp_path) == tmp_path.resolve()


def test_empty_directory_is_named_as_empty(tmp_path):
    """Issue 24 probe: an empty --pretrained_dir failed later, asking for config.json."""
    with pytest.raises(OfflineSourceError) as err:
        local_source(tmp_path, what="teacher")
    assert f"teacher source '{tmp_path}' is an empty directory" in str(err.value)


@pytest.mark.parametrize("hub_id", ["facebook/wav2vec2-base", "bert-base-uncased", "openai/whisper-tiny"])
def test_hub_id_is_refused_with_instructions(hub_id):
    with pytest.raises(OfflineSourceError) as err:
        local_source(hub_id, what="teacher")
    msg = str(err.value)
    assert hub_id in msg and "local directory only" in msg and "save_pretrained" in msg


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(OfflineSourceError, match="does not exist"):
        local_source(missing)


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    f.write_bytes(b"x")
    with pytest.raises(OfflineSourceError, match="is a file"):
        local_source(f)


def test_empty_source():
    with pytest.raises(OfflineSourceError, match="empty"):
        local_source("")
