"""The random-weight Fun-ASR-Nano checkpoint fixture matches what upstream funasr expects.

Needs torch, funasr (1.4.16), transformers and tokenizers (the test extras). Does not import
funasr_cpp.
"""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import torch  # noqa: E402

from fixtures.checkpoint import (  # noqa: E402
    CTC_TIKTOKEN_SPECIALS,
    FULL_DIMS,
    tensor_specs,
    write_checkpoint,
)
from fixtures.ctc_reference import fake_torchaudio  # noqa: E402
from fixtures.tokenizer import QWEN3_ADDED_TOKENS, training_corpus  # noqa: E402

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

# (container, module_prefix, dtype, ctc): every container x prefix pair, every dtype,
# both CTC variants.
LOAD_CASES = [
    ("flat", False, "bf16", True),
    ("state_dict", False, "fp16", False),
    ("flat", True, "fp32", True),
    ("state_dict", True, "bf16", False),
    ("flat", False, "fp32", False),
]


def _case_id(case):
    c, p, d, ctc = case
    return f"{c}-{'module' if p else 'plain'}-{d}-{'ctc' if ctc else 'noctc'}"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def ckpt_factory(tmp_path_factory):
    """Build (and cache for the session) a tiny checkpoint folder per option set."""
    cache: dict = {}

    def make(**opts):
        opts = {"container": "flat", "module_prefix": False, "dtype": "bf16", "ctc": True,
                "seed": 0, **opts}
        key = tuple(sorted(opts.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("funasr_ckpt")
            cache[key] = write_checkpoint(out, **opts)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(ckpt_factory):
    return ckpt_factory()


@pytest.fixture(scope="session")
def funasr_mod():
    import funasr.models.fun_asr_nano.model as nano  # registers FunASRNano
    from funasr import AutoModel

    return AutoModel, nano


@pytest.fixture(scope="session")
def automodel_factory(funasr_mod):
    AutoModel, _ = funasr_mod
    cache: dict = {}

    def make(info):
        if info["out_dir"] not in cache:
            cache[info["out_dir"]] = AutoModel(model=info["out_dir"], device="cpu", hub="ms",
                                               disable_update=True, disable_pbar=True)
        return cache[info["out_dir"]]

    return make


def _load_ckpt_state(path):
    obj = torch.load(path, map_location="cpu")
    return obj


def _unwrap(obj):
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _waveform(seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(16000 * seconds)
    t = torch.arange(n, dtype=torch.float32) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 220.0 * t) * torch.sin(2 * math.pi * 1.5 * t)
    return (tone + 0.05 * torch.randn(n, generator=g)).to(torch.float32)


# ----------------------------------------------------------------------------- key table

def test_full_key_table_matches_spec():
    d = dict(FULL_DIMS)
    specs = tensor_specs(d, ctc=True)
    keys = [k for k, _ in specs]
    assert len(keys) == len(set(keys)) == 1347
    assert len(tensor_specs(d, ctc=False)) == 1261
    groups = {}
    for k, shape in specs:
        groups.setdefault(k.split(".")[0], []).append(math.prod(shape))
    assert {g: len(v) for g, v in groups.items()} == {
        "audio_encoder": 914, "llm": 311, "audio_adaptor": 36, "ctc_decoder": 84, "ctc": 2}
    # parameter counts from the spec (millions, rounded to 0.1)
    assert round(sum(groups["audio_encoder"]) / 1e6, 1) == 221.1
    assert round(sum(groups["audio_adaptor"]) / 1e6, 1) == 12.6
    assert round(sum(groups["llm"]) / 1e6, 1) == 751.6
    assert round(sum(groups["ctc_decoder"]) / 1e6, 1) == 8.0
    assert round(sum(groups["ctc"]) / 1e6, 1) == 31.0
    # module order: audio_encoder, llm, audio_adaptor, ctc_decoder, ctc
    assert list(groups) == ["audio_encoder", "llm", "audio_adaptor", "ctc_decoder", "ctc"]
    shapes = dict(specs)
    assert shapes["audio_encoder.encoders0.0.self_attn.linear_q_k_v.weight"] == (1536, 560)
    assert shapes["audio_encoder.encoders.48.self_attn.fsmn_block.weight"] == (512, 1, 11)
    assert shapes["llm.model.layers.27.self_attn.q_proj.weight"] == (2048, 1024)
    assert shapes["llm.lm_head.weight"] == (151936, 1024)
    assert shapes["audio_adaptor.blocks.1.feed_forward.w_1.weight"] == (256, 1024)
    assert shapes["ctc_decoder.blocks.4.feed_forward.w_2.weight"] == (512, 128)
    assert shapes["ctc.ctc_lo.weight"] == (60515, 512)


# ----------------------------------------------------------------------------- (a) loading

@pytest.mark.parametrize("case", LOAD_CASES, ids=_case_id)
def test_loads_in_funasr_with_every_key(case, ckpt_factory, automodel_factory):
    container, prefix, dtype, ctc = case
    info = ckpt_factory(container=container, module_prefix=prefix, dtype=dtype, ctc=ctc)
    raw = _load_ckpt_state(info["paths"]["model_pt"])
    if container == "state_dict":
        assert list(raw) == ["state_dict"]
    assert all(k.startswith("module.") == prefix for k in _flat_keys(raw))
    src = _unwrap(raw)
    assert list(src) == info["keys"]

    # stored dtypes: uniform, as released (BF16 throughout)
    main_dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    ctc_dt = main_dt
    for k, v in src.items():
        assert v.dtype == (ctc_dt if k.startswith(("ctc.", "ctc_decoder.")) else main_dt), k
    assert torch.equal(src["llm.lm_head.weight"], src["llm.model.embed_tokens.weight"])
    assert src["llm.lm_head.weight"].data_ptr() != src["llm.model.embed_tokens.weight"].data_ptr()

    m = automodel_factory(info)
    model = m.model
    # funasr resolved every file inside the folder (configuration.json)
    assert m.kwargs["init_param"] == info["paths"]["model_pt"]
    assert m.kwargs["llm_conf"]["init_param_path"] == info["paths"]["qwen_dir"]
    assert m.kwargs["tokenizer_conf"]["init_param_path"] == info["paths"]["qwen_dir"]
    assert m.kwargs["ctc_tokenizer_conf"]["vocab_path"] == info["paths"]["tiktoken"]
    assert type(m.kwargs["tokenizer"]).__name__.startswith("Qwen2Tokenizer")
    assert model.llm.config.vocab_size == info["dims"]["llm_vocab"]

    # exact key equality (funasr's "All keys matched" log proves nothing): with CTC the
    # model keeps the branch and every key comes from the file; without CTC funasr drops
    # the branch, and what remains is exactly the file's keys.
    dst = model.state_dict()
    assert list(dst) == list(src)
    assert (model.ctc_decoder is not None) == ctc
    assert (model.ctc is not None) == ctc
    # values really loaded (funasr silently skips shape mismatches)
    for k, v in src.items():
        assert dst[k].shape == v.shape, k
        assert torch.equal(dst[k], v.to(dst[k].dtype)), k
    if ctc:
        assert model.ctc_tokenizer.encoding.n_vocab == info["dims"]["ctc_vocab"]
        assert model.blank_id == info["dims"]["ctc_vocab"] - 1


def _flat_keys(raw):
    return list(raw["state_dict"]) if list(raw) == ["state_dict"] else list(raw)


def test_no_ctc_checkpoint_keeps_config(ckpt_factory):
    a = ckpt_factory(ctc=False)
    b = ckpt_factory()
    # the releases differ only in model.pt, not in config.yaml
    assert Path(a["paths"]["config_yaml"]).read_text() == Path(b["paths"]["config_yaml"]).read_text()
    assert a["num_tensors"] == b["num_tensors"] - sum(
        k.startswith(("ctc.", "ctc_decoder.")) for k in b["keys"])


def test_config_yaml_structure(tiny_ckpt):
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.load(tiny_ckpt["paths"]["config_yaml"]), resolve=True)
    d = tiny_ckpt["dims"]
    assert cfg["model"] == "FunASRNano"
    assert cfg["audio_encoder"] == "SenseVoiceEncoderSmall"
    assert cfg["audio_encoder_conf"]["output_size"] == d["enc_dim"]
    assert cfg["audio_encoder_conf"]["sanm_shfit"] == 0
    assert cfg["llm_conf"]["llm_dtype"] == "bf16"
    assert cfg["audio_adaptor_conf"]["use_low_frame_rate"] is True
    assert cfg["ctc_decoder_conf"]["n_layer"] == d["ctc_layers"]
    assert cfg["ctc_vocab_size"] == d["ctc_vocab"]
    assert cfg["frontend_conf"] == {"fs": 16000, "window": "hamming", "n_mels": 80,
                                    "frame_length": 25, "frame_shift": 10, "lfr_m": 7,
                                    "lfr_n": 6, "cmvn_file": None}
    assert cfg["tokenizer_conf"]["init_param_path"] == "Qwen3-0.6B"
    assert "do_think" not in cfg["dataset_conf"]
    meta = json.loads(Path(tiny_ckpt["paths"]["configuration_json"]).read_text())
    assert meta["file_path_metas"]["init_param"] == "model.pt"
    qcfg = json.loads(Path(tiny_ckpt["paths"]["qwen_config"]).read_text())
    ids = tiny_ckpt["token_ids"]
    assert qcfg["bos_token_id"] == ids["<|endoftext|>"]
    assert qcfg["eos_token_id"] == ids["<|im_end|>"]
    assert qcfg["vocab_size"] == tiny_ckpt["tokenizer_size"]
    assert qcfg["num_attention_heads"] * qcfg["head_dim"] != qcfg["hidden_size"]
    gen = json.loads(Path(tiny_ckpt["paths"]["generation_config"]).read_text())
    assert gen["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert gen["pad_token_id"] == ids["<|endoftext|>"]


# ----------------------------------------------------------------------------- (b) generate

def test_generate_returns_text_without_ctc(ckpt_factory, automodel_factory):
    m = automodel_factory(ckpt_factory(ctc=False))
    res = m.generate(input=[_waveform()], cache={}, batch_size=1, max_length=24,
                     disable_pbar=True)
    assert len(res) == 1
    r = res[0]
    assert set(r) == {"key", "text", "text_tn", "label"}
    assert isinstance(r["text"], str) and r["text"].strip()
    # varied (not constant) greedy output from the random LLM
    assert len(set(r["text"].split())) > 2 or len(set(r["text"])) > 4


def test_generate_with_ctc(ckpt_factory, automodel_factory):
    m = automodel_factory(ckpt_factory())
    assert m.model.ctc_decoder is not None
    import importlib.util

    if importlib.util.find_spec("torchaudio") is None:
        # funasr 1.4.16 without torchaudio: CTC text is computed, then the timestamp step
        # raises ImportError (require_torchaudio sits outside forced_align's try), so the
        # whole generate() fails.
        with pytest.raises(ImportError, match="torchaudio"):
            m.generate(input=[_waveform()], cache={}, batch_size=1, max_length=8,
                       disable_pbar=True)
    with fake_torchaudio():  # upstream's forced_align on the reference Viterbi
        res = m.generate(input=[_waveform(3.0, seed=1)], cache={}, batch_size=1, max_length=16,
                         disable_pbar=True, language="中文", itn=False, hotwords=["Qwen"])
    r = res[0]
    assert {"text", "ctc_text", "ctc_timestamps", "timestamps"} <= set(r)
    assert isinstance(r["text"], str) and isinstance(r["ctc_text"], str)
    for ts in r["ctc_timestamps"] + r["timestamps"]:
        assert 0 <= ts["start_time"] < ts["end_time"] <= 3.0 + 1e-6


# ----------------------------------------------------------------------------- (c) tokenizer

@pytest.fixture(scope="session")
def hf_tok(tiny_ckpt):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_ckpt["paths"]["qwen_dir"])


def test_hf_tokenizer_special_tokens(hf_tok, tiny_ckpt):
    ids = tiny_ckpt["token_ids"]
    n_regular = tiny_ckpt["tokenizer_size"] - len(QWEN3_ADDED_TOKENS)
    assert [ids[t] for t, _ in QWEN3_ADDED_TOKENS] == list(
        range(n_regular, n_regular + len(QWEN3_ADDED_TOKENS)))
    assert len(hf_tok) == tiny_ckpt["tokenizer_size"]
    for tok, _ in QWEN3_ADDED_TOKENS:
        assert hf_tok.encode(tok) == [ids[tok]], tok
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.eos_token_id == ids["<|im_end|>"]
    assert hf_tok.pad_token == "<|endoftext|>" and hf_tok.pad_token_id == ids["<|endoftext|>"]
    assert hf_tok.bos_token is None
    # Fun-ASR's suffix, and byte-level ids shared with real Qwen ("\n" 198, "Ġ" 220, "." 13)
    assert hf_tok.encode("<|im_end|>\n<|im_start|>assistant\n") == [
        ids["<|im_end|>"], 198, ids["<|im_start|>"], hf_tok.convert_tokens_to_ids("assistant"), 198]
    assert hf_tok.encode(" ") == [220] and hf_tok.encode(".") == [13]
    chat = hf_tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "语音转写："}], tokenize=False, add_generation_prompt=True)
    assert chat == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n语音转写：<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("text", [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n"
    "**上下文信息：**\n\n\n热词列表：[阿里巴巴, FunASR]\n语音转写成中文，不进行文本规整：",
    "Hello 世界! It's 2025年12月, we'll test ünïcödé & emoji 🙂 <think>\n\n</think>\n\n ok",
    "  leading spaces\tand tabs\r\n<|endoftext|>trailing   ",
])
def test_hf_tokenizer_round_trip(hf_tok, text):
    ids = hf_tok.encode(text)
    assert hf_tok.decode(ids) == text
    assert max(ids) < len(hf_tok)


def test_prompt_strings_have_merges(hf_tok):
    for s in ["语音转写", "，不进行文本规整", "You are a helpful assistant.", "system", "user",
              "assistant", "热词列表"]:
        ids = hf_tok.encode(s)
        assert len(ids) < len(s.encode("utf-8")), s


def test_vocab_and_merges_match_tokenizer_json(tiny_ckpt, hf_tok):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    p = tiny_ckpt["paths"]
    spec = json.loads(Path(p["tokenizer_json"]).read_text(encoding="utf-8"))
    vocab = json.loads(Path(p["vocab_json"]).read_text(encoding="utf-8"))
    assert vocab == spec["model"]["vocab"]
    lines = Path(p["merges_txt"]).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert lines[1:] == merges
    assert spec["normalizer"]["type"] == "NFC"
    pre = spec["pre_tokenizer"]["pretokenizers"]
    assert pre[0]["type"] == "Split" and pre[0]["behavior"] == "Isolated"
    assert pre[1]["type"] == "ByteLevel" and pre[1]["use_regex"] is False
    assert spec["decoder"]["type"] == "ByteLevel"
    # a tokenizer rebuilt from vocab.json + merges.txt encodes like tokenizer.json
    rebuilt = Tokenizer.from_file(p["tokenizer_json"])
    rebuilt.model = BPE.from_file(p["vocab_json"], p["merges_txt"])
    ref = Tokenizer.from_file(p["tokenizer_json"])
    for line in training_corpus()[::3] + ["unseen words: zebra quixotic 龙猫"]:
        assert rebuilt.encode(line).ids == ref.encode(line).ids
    tcfg = json.loads(Path(p["tokenizer_config"]).read_text(encoding="utf-8"))
    assert tcfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert tcfg["added_tokens_decoder"][str(tiny_ckpt["token_ids"]["<think>"])] == {
        "content": "<think>", "lstrip": False, "normalized": False, "rstrip": False,
        "single_word": False, "special": False}


def test_ctc_tiktoken_file(tiny_ckpt, funasr_mod):
    from funasr.models.sense_voice.whisper_lib.tokenizer import get_encoding

    path = tiny_ckpt["paths"]["tiktoken"]
    lines = Path(path).read_text().splitlines()
    assert all(len(line.split()) == 2 and line.split()[1] == str(i)
               for i, line in enumerate(lines))
    enc = get_encoding(name="multilingual", num_languages=8749, vocab_path=path)
    assert enc.n_vocab == len(lines) + CTC_TIKTOKEN_SPECIALS == tiny_ckpt["dims"]["ctc_vocab"]
    text = "语音转写 Hello world, 123!"
    assert enc.decode(enc.encode(text)) == text


# ----------------------------------------------------------------------------- (d) determinism

def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _all_files(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_deterministic_for_seed(tiny_ckpt, tmp_path):
    # a fresh process through the CLI gives byte-identical files
    out = tmp_path / "cli"
    subprocess.run([sys.executable, str(FIXTURES_DIR / "checkpoint.py"), str(out), "--seed", "0", "--container", "flat"],
                   check=True, capture_output=True, timeout=120)
    files = _all_files(tiny_ckpt["out_dir"])
    assert files == _all_files(out)
    for f in files:
        assert _sha(Path(tiny_ckpt["out_dir"]) / f) == _sha(out / f), f


def test_other_seed_changes_weights_not_tokenizer(tiny_ckpt, ckpt_factory):
    other = ckpt_factory(seed=1)
    a = _unwrap(_load_ckpt_state(tiny_ckpt["paths"]["model_pt"]))
    b = _unwrap(_load_ckpt_state(other["paths"]["model_pt"]))
    assert list(a) == list(b)
    assert not torch.equal(a["llm.model.embed_tokens.weight"], b["llm.model.embed_tokens.weight"])
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert _sha(Path(tiny_ckpt["paths"]["qwen_dir"]) / name) == _sha(
            Path(other["paths"]["qwen_dir"]) / name)
    # tensors depend on (seed, name) only: the no-CTC file shares the other tensors
    c = _unwrap(_load_ckpt_state(ckpt_factory(ctc=False)["paths"]["model_pt"]))
    for k, v in c.items():
        assert torch.equal(v, a[k]), k
