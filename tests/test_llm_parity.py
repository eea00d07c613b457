"""The converted LLM through libllama vs transformers' Qwen3ForCausalLM built from the same folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fixtures.checkpoint import soften_attention, write_checkpoint
from fixtures.prompts import PROMPT
from fixtures.qwen3_reference import qwen3_reference
from fixtures.tolerances import TOLERANCE
from funasr_cpp.converters import convert
from funasr_cpp.llm import LlamaModel

@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The tiny fixture, with Qwen3's per-head q/k RMSNorm gains brought from ~3 to ~1.

    The default fixture makes attention very sharp (varied greedy text for the ASR tests); a
    2-layer random model that sharp turns weight rounding into chaos (q8_0 per-row cosine
    0.7 although its tensors equal llama.cpp's own quantization), which says nothing about
    the converter. f32 parity is checked on both."""
    folder = tmp_path_factory.mktemp("llm") / "nano"
    write_checkpoint(folder, seed=11, container="flat")
    soften_attention(folder)
    return folder


@pytest.fixture(scope="module")
def hf(release):
    return qwen3_reference(release)


@pytest.fixture(scope="module")
def reference(hf):
    model, tok = hf
    ids = tok.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    return ids, logits


@pytest.fixture(scope="module")
def gguf_paths(release, tmp_path_factory):
    out = {}
    for kind in TOLERANCE:
        out[kind] = convert(release, tmp_path_factory.mktemp(kind), llm_type=kind, mmproj_type="f32",
                            progress=False)[0]
    return out


def test_tokenization_matches_hf(gguf_paths, hf, reference):
    _, tok = hf
    ids, _ = reference
    with LlamaModel(gguf_paths["f32"], n_ctx=1024) as llm:
        assert llm.tokenize(PROMPT) == ids
        for text in ["语音转写：", "<|im_end|>\n<|im_start|>assistant\n", "  hello\n\n world ", "数字123和4567",
                     "<think>\n\n</think>\n\n", "混合 Chinese 和 English。"]:
            assert llm.tokenize(text) == tok.encode(text, add_special_tokens=False), text
    assert len(ids) > 150


@pytest.mark.parametrize("kind", list(TOLERANCE))
def test_logits_match_transformers(gguf_paths, reference, kind):
    ids, ref = reference
    with LlamaModel(gguf_paths[kind], n_ctx=1024, n_threads=2, kv_type="f32", flash_attn="off") as llm:
        got = llm.eval_logits(ids)
    assert got.shape == ref.shape
    diff = np.abs(got - ref).max()
    cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    top1 = (got.argmax(-1) == ref.argmax(-1)).mean()
    max_rel, min_cos, min_top1 = TOLERANCE[kind]
    if kind == "f32":
        assert diff <= 1e-3, diff
    else:
        assert diff / ref.std() <= max_rel, (kind, diff, ref.std())
    assert cos.min() >= min_cos, (kind, cos.min())
    assert top1 >= min_top1, (kind, top1)


def test_f32_parity_on_the_sharp_default_fixture(tmp_path, hf):
    """The unmodified fixture (sharp attention) through an f32 GGUF: still within 1e-3."""
    folder = tmp_path / "sharp"
    write_checkpoint(folder, seed=11, container="flat")
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    model = Qwen3ForCausalLM(Qwen3Config(**json.loads((folder / "Qwen3-0.6B/config.json").read_text()))).eval()
    sd = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict({k[4:]: v.float() for k, v in sd.items() if k.startswith("llm.")}, strict=True)
    ids = AutoTokenizer.from_pretrained(folder / "Qwen3-0.6B").encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    path = convert(folder, tmp_path / "out", llm_type="f32", mmproj_type="f32", progress=False)[0]
    with LlamaModel(path, n_ctx=1024, n_threads=2, kv_type="f32", flash_attn="off") as llm:
        assert np.abs(llm.eval_logits(ids) - ref).max() <= 1e-3


def test_bf16_weights_are_the_checkpoint_bits(gguf_paths, release):
    from gguf import GGUFReader

    sd = torch.load(release / "model.pt", map_location="cpu", weights_only=True)
    got = {t.name: np.array(t.data) for t in GGUFReader(gguf_paths["bf16"]).tensors}
    want = sd["llm.model.layers.1.mlp.up_proj.weight"].view(torch.int16).numpy().view(np.uint8)
    assert np.array_equal(got["blk.1.ffn_up.weight"].reshape(-1), want.reshape(-1))


def test_q8_0_equals_llama_cpp_own_quantization(gguf_paths, tmp_path):
    from gguf import GGUFReader

    from funasr_cpp.llm import quantize

    quantize(gguf_paths["f32"], tmp_path / "llama-q8_0.gguf", "q8_0")
    ours = {t.name: (t.tensor_type, np.array(t.data)) for t in GGUFReader(gguf_paths["q8_0"]).tensors}
    theirs = {t.name: (t.tensor_type, np.array(t.data)) for t in GGUFReader(tmp_path / "llama-q8_0.gguf").tensors}
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name][0] == theirs[name][0], name
        assert np.array_equal(ours[name][1], theirs[name][1]), name


@pytest.mark.skipif("AMX" not in __import__("funasr_cpp._testing", fromlist=["x"]).cpu_extra_buffer_types(),
                    reason="no AMX buffer type here (funasr-cpp info: AMX_INT8)")
def test_q8_0_logits_on_amx_equal_the_plain_kernels(gguf_paths, reference, monkeypatch):
    """q8_0 weights in the AMX buffer (the default where it runs) vs the plain CPU buffer
    (FUNASR_NO_EXTRA_BUFTS=1): the same integer dot products of the same q8_0 activations, so
    (nearly) the same logits, an order of magnitude closer to each other than q8_0 is to f32, and
    the same per-token log-likelihood of the prompt (a perplexity check)."""
    ids, _ = reference

    def run(kind):
        with LlamaModel(gguf_paths[kind], n_ctx=1024, n_threads=2, kv_type="f32", flash_attn="off") as llm:
            return llm.eval_logits(ids).astype(np.float64)

    amx = run("q8_0")
    monkeypatch.setenv("FUNASR_NO_EXTRA_BUFTS", "1")
    plain, f32 = run("q8_0"), run("f32")

    def nll(logits):  # mean negative log-likelihood of each next prompt token
        z = logits[:-1] - logits[:-1].max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return -logp[np.arange(len(ids) - 1), ids[1:]].mean()

    # measured on this fixture: every row but the last bit for bit, the last within 0.012 (q8_0 vs f32: 0.35)
    assert np.abs(amx - plain).max() <= 0.1 * np.abs(plain - f32).max(), (np.abs(amx - plain).max(),
                                                                           np.abs(plain - f32).max())
    assert abs(nll(amx) - nll(plain)) <= 1e-4 * abs(nll(plain)), (nll(amx), nll(plain))
    second = np.sort(plain, -1)[:, -2]
    near_tie = plain.max(-1) - second < 1e-3 * plain.std()
    assert ((amx.argmax(-1) == plain.argmax(-1)) | near_tie).all()
