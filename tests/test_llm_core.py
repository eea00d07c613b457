"""_core.LlamaModel (tokenizer, full-sequence logits) and quantize() on tiny random qwen3 GGUFs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import gguf
import numpy as np
import pytest

import funasr_cpp
from fixtures.cli import scripts_path_env
from fixtures.tiny_llm_gguf import MERGES, SPECIALS, byte_symbols, write_tiny_qwen3
from funasr_cpp.llm import QUANT_TYPES, LlamaModel, quantize

TOKENS = byte_symbols() + ["".join(m) for m in MERGES] + SPECIALS  # the tiny GGUF's token list
IM_START, IM_END = TOKENS.index("<|im_start|>"), TOKENS.index("<|im_end|>")
TEXT = "<|im_start|>user\nhello, the world!<|im_end|>\n<|im_start|>assistant\n"

# llama_ftype values from llama.h: what general.file_type must say after quantize(type)
FTYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
          "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q4_k": 15,
          "q5_k_s": 16, "q5_k_m": 17, "q5_k": 17, "q6_k": 18}


@pytest.fixture(scope="module")
def tiny(tiny_qwen3):
    """f32 qwen3, n_embd 64: rows too short for 256-element k-quant blocks (the session's tiny_qwen3)."""
    return tiny_qwen3[0]


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory):
    """f32 qwen3 whose every matrix row is a multiple of 256 (k-quants apply without fallback)."""
    path = tmp_path_factory.mktemp("llm") / "tiny-qwen3-256.gguf"
    write_tiny_qwen3(path, n_embd=256, n_head=8, n_head_kv=2, head_dim=32, n_ff=512)
    return path


@pytest.fixture(scope="module")
def model(tiny):
    with LlamaModel(tiny, n_ctx=512, n_threads=2) as m:
        yield m


def token_ids(m: LlamaModel, n: int) -> list:
    return (m.tokenize(TEXT) * 10)[:n]


def tensor_types(path) -> dict:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def file_type(path) -> int:
    field = gguf.GGUFReader(str(path)).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


def leftovers(directory) -> list:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


# ----------------------------------------------------------------------------- model + tokenizer
def test_properties(model, tiny):
    assert isinstance(model, funasr_cpp._core.LlamaModel)
    assert model.n_vocab == len(TOKENS) == 262
    assert model.n_embd == 64
    assert model.n_ctx >= 512 and model.n_batch == 512
    assert model.path == str(tiny)
    assert model.bos == TOKENS.index("<|endoftext|>") and model.eos == IM_END
    assert IM_END in model.eog_ids and model.eos_ids == model.eog_ids
    assert model.is_eog(IM_END) and not model.is_eog(ord("a")) and not model.is_eog(10**6)
    assert "n_vocab=262" in repr(model)


def test_n_ctx_is_padded_and_n_batch_capped(tiny):
    with LlamaModel(tiny, n_ctx=300, n_batch=4096) as m:
        assert m.n_ctx == 512  # llama.cpp rounds up to a multiple of 256 ...
        assert m.n_batch == 300  # ... after capping n_batch at the requested n_ctx


def test_tokenize_ascii_round_trip(model):
    text = "Hello, world! 0123 ~ {x: [1, 2]}"
    ids = model.tokenize(text)
    assert ids == list(text.encode())  # byte-level vocabulary, no merge applies: one id per byte
    assert model.detokenize(ids) == text
    text = "he said the end"
    ids = model.tokenize(text)
    assert ids[0] == TOKENS.index("he") and TOKENS.index("Ġthe") in ids  # the merges are used
    assert model.detokenize(ids) == text


def test_special_tokens_parse_to_single_ids(model):
    text = "<|im_start|>user\nhi<|im_end|>"
    ids = model.tokenize(text)
    assert ids == [IM_START, *b"user\nhi", IM_END]
    assert model.detokenize(ids) == text
    assert model.detokenize(ids, unparse_special=False) == "user\nhi"
    assert model.token_to_piece(IM_START) == b"<|im_start|>"
    # parse_special=False: the marker is plain text
    plain = model.tokenize(text, parse_special=False)
    assert IM_START not in plain and model.detokenize(plain) == text


def test_utf8_and_partial_characters(model):
    text = "héllo 你好"
    ids = model.tokenize(text)
    assert model.detokenize(ids) == text
    assert model.token_to_piece(ids[1]) == "é".encode()[:1]  # one byte of a 2-byte character
    cut = model.detokenize(ids[:2])  # ends inside "é"
    assert cut.startswith("h") and cut.endswith("\ufffd")
    assert model.detokenize([]) == ""
    assert model.detokenize(np.array(ids, dtype=np.int32)) == text


def test_token_id_errors(model):
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize([1, model.n_vocab])
    with pytest.raises(ValueError, match="out of range"):
        model.token_to_piece(-1)
    with pytest.raises(TypeError, match="integers"):
        model.detokenize([1.5, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        model.detokenize(np.zeros((2, 2), dtype=np.int64))


# ----------------------------------------------------------------------------- logits
def test_eval_logits_shape_and_finite(model):
    ids = token_ids(model, 20)
    logits = model.eval_logits(ids)
    assert logits.shape == (20, model.n_vocab) and logits.dtype == np.float32
    assert np.isfinite(logits).all() and logits.std() > 0
    assert not np.allclose(logits[0], logits[1])  # one row per position
    np.testing.assert_array_equal(model.eval_logits(np.array(ids, dtype=np.int32)), logits)


def test_eval_logits_clears_the_cache(model):
    a, b = token_ids(model, 20), model.tokenize("something else entirely")
    first = model.eval_logits(a)
    model.eval_logits(b)
    again = model.eval_logits(a)
    assert np.abs(first - again).max() < 1e-6  # b left nothing behind in the KV cache


def test_eval_logits_independent_of_n_batch(model, tiny):
    ids = token_ids(model, 40)
    full = model.eval_logits(ids)
    with LlamaModel(tiny, n_ctx=512, n_batch=7, n_threads=2) as small:
        assert small.n_batch == 7
        assert np.abs(small.eval_logits(ids) - full).max() < 1e-4


def test_eval_logits_flash_attn(model, tiny):
    ids = token_ids(model, 20)
    full = model.eval_logits(ids)
    for fa in ("on", "off"):
        with LlamaModel(tiny, n_ctx=256, flash_attn=fa) as m:
            assert np.abs(m.eval_logits(ids) - full).max() < 1e-3, fa


def test_eval_logits_is_causal(model):
    ids = token_ids(model, 30)
    full = model.eval_logits(ids)
    prefix = model.eval_logits(ids[:11])
    assert np.abs(prefix - full[:11]).max() < 1e-4


def test_eval_logits_errors(tiny, model):
    with pytest.raises(ValueError, match="at least one token"):
        model.eval_logits([])
    with pytest.raises(ValueError, match="token id 262 at index 1 is out of range"):
        model.eval_logits([1, 262])
    with pytest.raises(ValueError, match="out of range"):
        model.eval_logits(np.array([-1]))
    with LlamaModel(tiny, n_ctx=256) as m:
        m.eval_logits([1] * 256)
        with pytest.raises(ValueError, match="257 tokens do not fit the context"):
            m.eval_logits([1] * 257)


def test_threads_share_one_model(model):
    ids = token_ids(model, 24)
    expected = model.eval_logits(ids)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(model.eval_logits(ids))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    assert all(np.abs(r - expected).max() < 1e-6 for r in results)


def test_close(tiny):
    m = LlamaModel(tiny, n_ctx=256)
    m.close()
    m.close()  # idempotent
    assert m.closed and "closed" in repr(m)
    for call in (lambda: m.tokenize("hi"), lambda: m.eval_logits([1]), lambda: m.n_vocab,
                 lambda: m.detokenize([1]), lambda: m.is_eog(1)):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    with LlamaModel(tiny, n_ctx=256) as m2:
        assert m2.tokenize("hi") == [104, 105]
    assert m2.closed


def test_load_errors(tiny, tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LlamaModel(missing)
    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match="not a GGUF file.*" + str(text)):
        LlamaModel(text)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot load GGUF model " + str(cut)):
        LlamaModel(cut)
    with pytest.raises(ValueError, match="flash_attn"):
        LlamaModel(tiny, flash_attn="maybe")
    with pytest.raises(ValueError, match="n_batch"):
        LlamaModel(tiny, n_batch=0)


# ----------------------------------------------------------------------------- quantize
def test_quantize_q8_0_is_close_to_f32(tiny, model, tmp_path):
    dst = tmp_path / "q8.gguf"
    quantize(tiny, dst, "q8_0")
    assert dst.stat().st_size < 0.5 * tiny.stat().st_size
    assert file_type(dst) == FTYPES["q8_0"]
    assert leftovers(tmp_path) == []
    ids = token_ids(model, 20)
    ref = model.eval_logits(ids)
    with LlamaModel(dst, n_ctx=512) as q:
        out = q.eval_logits(ids)
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.99, cos


def test_quantize_k_quant(tiny256, tmp_path):
    dst = tmp_path / "q4km.gguf"
    funasr_cpp.quantize(str(tiny256), str(dst), "Q4_K_M", n_threads=2)  # str paths, any case
    types = tensor_types(dst)
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert not {"Q5_0", "Q5_1", "Q8_0", "F16"} & set(types.values())  # no fallback needed
    assert dst.stat().st_size < 0.25 * tiny256.stat().st_size
    with LlamaModel(dst, n_ctx=256) as m:
        assert np.isfinite(m.eval_logits(m.tokenize(TEXT))).all()


def test_quantize_k_quant_falls_back_for_short_rows(tiny, tmp_path):
    dst = tmp_path / "q4km.gguf"
    quantize(tiny, dst, "q4_k_m")
    types = tensor_types(dst)
    assert "Q4_K" not in types.values()  # 64-wide rows: llama.cpp falls back per tensor
    assert types["blk.0.attn_q.weight"] == "Q5_0"
    assert file_type(dst) == FTYPES["q4_k_m"]
    with LlamaModel(dst, n_ctx=256) as m:
        assert np.isfinite(m.eval_logits(m.tokenize(TEXT))).all()


@pytest.mark.parametrize("qtype", QUANT_TYPES)
def test_quantize_every_type(tiny256, tmp_path, qtype):
    dst = tmp_path / f"{qtype}.gguf"
    quantize(tiny256, dst, qtype)
    assert file_type(dst) == FTYPES[qtype]
    assert funasr_cpp.model_info(dst)["n_embd"] == 256


def test_quantize_replaces_dst_only_on_success(tiny, tmp_path):
    dst = tmp_path / "out.gguf"
    dst.write_bytes(b"old contents")
    quantize(tiny, dst, "q8_0")  # an existing dst is replaced
    assert dst.read_bytes()[:4] == b"GGUF"
    q8 = tmp_path / "q8.gguf"
    shutil.copy(dst, q8)
    dst.write_bytes(b"old contents")
    # fails inside llama.cpp, after it has begun writing: the temp file goes, dst stays as it was
    with pytest.raises(ValueError, match="cannot quantize .*requantizing from type q8_0 is disabled"):
        quantize(q8, dst, "q4_0")
    assert dst.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_quantize_bad_inputs(tiny, tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        quantize(missing, tmp_path / "out.gguf", "q8_0")
    text = tmp_path / "text.gguf"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match="not a GGUF file.*" + str(text)):
        quantize(text, tmp_path / "out.gguf", "q8_0")
    with pytest.raises(ValueError, match="unknown quantization type 'q9_k'.*q4_k_m"):
        quantize(tiny, tmp_path / "out.gguf", "q9_k")
    with pytest.raises(ValueError, match="destination is the source file"):
        quantize(tiny, tiny, "q8_0")
    src = tmp_path / "src.gguf"
    shutil.copy(tiny, src)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="destination is the source file"):
        quantize(src, tmp_path / "sub" / ".." / "src.gguf", "q8_0")  # the same file, spelled differently
    with pytest.raises(FileNotFoundError, match="destination directory does not exist: " + str(tmp_path / "no")):
        quantize(tiny, tmp_path / "no" / "out.gguf", "q8_0")
    with pytest.raises(IsADirectoryError, match=str(tmp_path / "sub")):
        quantize(tiny, tmp_path / "sub", "q8_0")
    assert not (tmp_path / "out.gguf").exists() and leftovers(tmp_path) == []


NOBODY = 65534

DROP_PRIVILEGES_AND_QUANTIZE = f"""
import os, funasr_cpp
funasr_cpp.quantize  # the native library loads on first use: before the privileges go
os.setgid({NOBODY}); os.setuid({NOBODY})
try:
    funasr_cpp.quantize("src.gguf", "ro/out.gguf", "q8_0")
except PermissionError as exc:
    print("PermissionError:", exc)
"""


def test_quantize_unwritable_dst_dir(tiny, tmp_path):
    src = tmp_path / "src.gguf"
    shutil.copy(tiny, src)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):
            with pytest.raises(PermissionError, match="cannot write to the destination directory " + str(ro)):
                quantize(src, ro / "out.gguf", "q8_0")
        elif hasattr(os, "setuid") and os.geteuid() == 0:
            # root may write anywhere: check as "nobody" in a child that starts in tmp_path
            # (relative paths: nobody cannot traverse pytest's 0o700 parents)
            tmp_path.chmod(0o755)
            src.chmod(0o644)
            out = subprocess.run([sys.executable, "-c", DROP_PRIVILEGES_AND_QUANTIZE], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "PermissionError: cannot write to the destination directory ro" in out.stdout
        else:
            pytest.skip("a 0o500 directory is writable here")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


# ----------------------------------------------------------------------------- CLI
def funasr_cpp_exe() -> tuple:
    env = scripts_path_env()
    exe = shutil.which("funasr-cpp", path=env["PATH"])
    assert exe, "funasr-cpp is not on PATH after install"
    return exe, env


def test_cli_quantize(tiny, tmp_path):
    exe, env = funasr_cpp_exe()
    dst = tmp_path / "q8.gguf"
    out = subprocess.run([exe, "quantize", str(tiny), str(dst), "q8_0", "--threads", "2"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and str(dst) in out.stdout and "q8_0" in out.stdout
    assert out.stdout.count("MiB") == 2 and " s" in out.stdout
    assert file_type(dst) == FTYPES["q8_0"]


def test_cli_quantize_errors(tiny, tmp_path):
    exe, env = funasr_cpp_exe()
    missing = tmp_path / "nope.gguf"
    for args, needle in [([str(missing), str(tmp_path / "o.gguf"), "q8_0"], str(missing)),
                         ([str(tiny), str(tmp_path / "o.gguf"), "q7_0"], "unknown quantization type 'q7_0'"),
                         ([str(tiny), str(tiny), "q8_0"], "destination is the source file")]:
        out = subprocess.run([exe, "quantize", *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert out.stderr.startswith("error: ") and needle in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.gguf").exists()
