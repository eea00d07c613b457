"""_core loads a GGUF LLM's metadata; bad files give Python exceptions naming the path."""
from __future__ import annotations

import pytest

import funasr_cpp

# tiny_qwen3 (conftest.py): (path, the metadata write_tiny_qwen3 wrote)


def test_reports_metadata(tiny_qwen3):
    path, expected = tiny_qwen3
    info = funasr_cpp.model_info(path)
    for key, value in expected.items():
        assert info[key] == value, key
    assert info["name"] == "tiny-qwen3-test"
    assert info["path"] == str(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=str(path)):
        funasr_cpp.model_info(path)


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        funasr_cpp.model_info(tmp_path)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("this is a text file, not a model\n")
    with pytest.raises(ValueError, match="not a GGUF file.*" + str(path)):
        funasr_cpp.model_info(path)


def test_truncated_gguf(tiny_qwen3, tmp_path):
    path, _ = tiny_qwen3
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot load GGUF model " + str(cut)):
        funasr_cpp.model_info(cut)
