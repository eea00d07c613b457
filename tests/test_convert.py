"""Converter: release folder -> qwen3 GGUF + funasr mmproj GGUF, checked against the checkpoint
(read with torch, independently of the converter's own reader) and upstream funasr."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, dequantize

from fixtures.checkpoint import write_checkpoint
from fixtures.cli import scripts_path_env
from fixtures.native import run_without_native
from funasr_cpp.converters import ReleaseError, convert

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# ----------------------------------------------------------------------------- helpers

def load_sd(folder) -> dict:
    sd = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    if "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v.float().numpy() for k, v in sd.items()}


def fields(reader: GGUFReader) -> dict:
    out = {}
    for name, f in reader.fields.items():
        if f.types and f.types[0].name == "ARRAY":
            out[name] = f.contents()
        else:
            out[name] = f.contents()
    return out


def tensors(reader: GGUFReader) -> dict:
    """name -> (ggml type, float32 numpy array in numpy (row-major) order)."""
    out = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        if t.tensor_type in (QT.F32, QT.F16):
            data = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            data = dequantize(t.data, t.tensor_type).reshape(shape)
        out[t.name] = (t.tensor_type, data)
    return out


def expected_audio_names(folder) -> dict:
    """checkpoint key -> mmproj tensor name, per the naming in the mtmd integration spec."""
    sd = load_sd(folder)
    enc = sorted({".".join(k.split(".")[1:3]) for k in sd
                  if k.split(".")[1] in ("encoders0", "encoders", "tp_encoders")},
                 key=lambda s: (s.split(".")[0] != "encoders0", s.split(".")[0] == "tp_encoders", int(s.split(".")[1])))
    sanm = {"norm1": "ln1", "self_attn.linear_q_k_v": "attn_qkv", "self_attn.linear_out": "attn_out",
            "norm2": "ln2", "feed_forward.w_1": "ffn_up", "feed_forward.w_2": "ffn_down"}
    block = {"self_attn.linear_q": "attn_q", "self_attn.linear_k": "attn_k", "self_attn.linear_v": "attn_v",
             "self_attn.linear_out": "attn_out", "norm1": "ln1", "norm2": "ln2",
             "feed_forward.w_1": "ffn_up", "feed_forward.w_2": "ffn_down"}
    m = {}
    for i, layer in enumerate(enc):
        for src, dst in sanm.items():
            for wb in ("weight", "bias"):
                m[f"audio_encoder.{layer}.{src}.{wb}"] = f"a.blk.{i}.{dst}.{wb}"
        m[f"audio_encoder.{layer}.self_attn.fsmn_block.weight"] = f"a.blk.{i}.conv_dw.weight"
    for wb in ("weight", "bias"):
        m[f"audio_encoder.after_norm.{wb}"] = f"a.post_ln.{wb}"
        m[f"audio_encoder.tp_norm.{wb}"] = f"mm.a.norm_pre.{wb}"
        for src, pre, blk in (("audio_adaptor", "mm.a", "local_blk"), ("ctc_decoder", "ctc", "blk")):
            m[f"{src}.linear1.{wb}"] = f"{pre}.mlp.1.{wb}"
            m[f"{src}.linear2.{wb}"] = f"{pre}.mlp.2.{wb}"
            for j in range(8):
                for s, d in block.items():
                    m[f"{src}.blocks.{j}.{s}.{wb}"] = f"{pre}.{blk}.{j}.{d}.{wb}"
        m[f"ctc.ctc_lo.{wb}"] = f"ctc.out.{wb}"
    return {k: v for k, v in m.items() if k in sd}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release") / "Fun-ASR-Nano-tiny"
    write_checkpoint(folder, seed=3)
    return folder


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory):
    out = {}
    for kind in ("f32", "f16", "q8_0"):
        outdir = tmp_path_factory.mktemp(f"gguf-{kind}")
        llm_type = "f32" if kind == "f32" else ("f16" if kind == "f16" else "q8_0")
        out[kind] = convert(ckpt, outdir, llm_type=llm_type, mmproj_type=kind, progress=False)
    return out


# ----------------------------------------------------------------------------- mmproj

def test_output_names(converted, ckpt):
    llm, mmproj = converted["f32"]
    assert llm.name == "fun-asr-nano-tiny-f32.gguf"
    assert mmproj.name == "mmproj-fun-asr-nano-tiny-f32.gguf"


def test_mmproj_metadata(converted, ckpt):
    f = fields(GGUFReader(converted["f32"][1]))
    cfg = __import__("yaml").safe_load((ckpt / "config.yaml").read_text())
    enc = cfg["audio_encoder_conf"]
    llm_cfg = json.loads((ckpt / "Qwen3-0.6B/config.json").read_text())
    assert f["general.architecture"] == "clip"
    assert f["general.type"] == "mmproj"
    assert f["clip.has_audio_encoder"] is True
    assert f["clip.projector_type"] == "funasr"
    assert f["clip.audio.embedding_length"] == enc["output_size"]
    assert f["clip.audio.attention.head_count"] == enc["attention_heads"]
    assert f["clip.audio.feed_forward_length"] == enc["linear_units"]
    assert f["clip.audio.block_count"] == enc["num_blocks"] + enc["tp_blocks"]
    assert f["clip.audio.projection_dim"] == llm_cfg["hidden_size"]
    assert f["clip.audio.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert f["clip.audio.num_mel_bins"] == 80
    assert f["clip.audio.conv_kernel_size"] == enc["kernel_size"]
    assert f["funasr.frontend.sample_rate"] == 16000
    assert (f["funasr.frontend.lfr_m"], f["funasr.frontend.lfr_n"]) == (7, 6)
    assert f["funasr.frontend.window"] == "hamming"
    assert f["funasr.frontend.input_scale"] == 32768.0
    assert "funasr.frontend.cmvn_shift" not in f  # the release has no am.mvn
    assert f["funasr.encoder.num_blocks"] == enc["num_blocks"]
    assert f["funasr.encoder.tp_blocks"] == enc["tp_blocks"]
    assert f["funasr.encoder.input_scale"] == pytest.approx(enc["output_size"] ** 0.5)
    assert f["funasr.adaptor.head_count"] == 8
    assert f["funasr.adaptor.layer_norm_epsilon"] == pytest.approx(1e-12)
    assert f["funasr.adaptor.block_count"] == cfg["audio_adaptor_conf"]["n_layer"]
    ranks = (ckpt / "multilingual.tiktoken").read_text().split()[0::2]
    assert f["funasr.ctc.tiktoken_ranks"] == ranks
    assert f["funasr.ctc.vocab_size"] == cfg["ctc_vocab_size"]
    assert f["funasr.ctc.blank_id"] == cfg["ctc_vocab_size"] - 1


def test_mmproj_f32_round_trips_every_tensor(converted, ckpt):
    sd = load_sd(ckpt)
    got = tensors(GGUFReader(converted["f32"][1]))
    names = expected_audio_names(ckpt)
    audio_keys = [k for k in sd if not k.startswith("llm.")]
    assert sorted(names) == sorted(audio_keys), "every encoder/adaptor/CTC tensor is mapped"
    assert len(got) == len(audio_keys) + 1  # + the sinusoidal position table
    for key, name in names.items():
        qtype, data = got[name]
        want = sd[key].reshape(sd[key].shape[0], -1) if key.endswith("fsmn_block.weight") else sd[key]
        assert qtype == QT.F32, name
        np.testing.assert_array_equal(data, want, err_msg=name)


def test_position_table_matches_funasr(converted):
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder

    qtype, table = tensors(GGUFReader(converted["f16"][1]))["a.position_embd.weight"]
    assert qtype == QT.F32 and table.shape[1] == 560 and table.shape[0] >= 1000  # >= 60 s of LFR frames
    n = table.shape[0]
    ref = SinusoidalPositionEncoder().encode(torch.arange(1, n + 1)[None, :], 560, torch.float32)[0].numpy()
    # torch's float32 exp is not correctly rounded on every CPU (on AVX-512 machines one
    # inv_timescale comes out an ulp off, moving large-position angles by 1.5e-5); ours uses the
    # correctly rounded value, so the bound is upstream's own spread across machines
    np.testing.assert_allclose(table, ref, atol=3e-5, rtol=0)


@pytest.mark.parametrize("kind,tol", [("f16", 2e-3), ("q8_0", 2e-2)])
def test_mmproj_quantized_types(converted, kind, tol):
    ref = tensors(GGUFReader(converted["f32"][1]))
    got = tensors(GGUFReader(converted[kind][1]))
    want_type = QT.F16 if kind == "f16" else QT.Q8_0
    for name, (qtype, data) in got.items():
        r = ref[name][1]
        if data.ndim == 1 or name.endswith(("conv_dw.weight", "position_embd.weight")):
            assert qtype == QT.F32, f"{name} must stay F32"
            np.testing.assert_array_equal(data, r)
        else:
            # q8_0 blocks are 32 wide: rows of another length (encoders0's 560 inputs) stay f16
            assert qtype == (want_type if data.shape[-1] % 32 == 0 else QT.F16), name
            rel = np.abs(data - r).max() / np.abs(r).max()
            assert rel < tol, (name, rel)


def test_cmvn_file_is_carried(ckpt, tmp_path):
    from funasr.frontends.wav_frontend import load_cmvn

    folder = tmp_path / "with-cmvn"
    shutil.copytree(ckpt, folder)
    rng = np.random.default_rng(0)
    shift, scale = rng.normal(size=560).astype(np.float32), rng.uniform(0.5, 2, size=560).astype(np.float32)
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    (folder / "am.mvn").write_text(
        "<Nnet>\n<Splice> 560 560\n[ 0 ]\n"
        f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n</Nnet>\n")
    _, mmproj = convert(folder, tmp_path / "out", llm_type="f32", mmproj_type="f32", progress=False)
    f = fields(GGUFReader(mmproj))
    ref = load_cmvn(str(folder / "am.mvn")).numpy()
    np.testing.assert_array_equal(np.array(f["funasr.frontend.cmvn_shift"], np.float32), ref[0])
    np.testing.assert_array_equal(np.array(f["funasr.frontend.cmvn_scale"], np.float32), ref[1])


def test_release_without_ctc(tmp_path):
    folder = tmp_path / "noctc"
    write_checkpoint(folder, seed=3, ctc=False)
    _, mmproj = convert(folder, tmp_path / "out", llm_type="f32", mmproj_type="f32", progress=False)
    reader = GGUFReader(mmproj)
    names = [t.name for t in reader.tensors]
    assert not any(n.startswith("ctc.") for n in names)
    assert {k for k in reader.fields if k.startswith("funasr.ctc.")} == {"funasr.ctc.status",
                                                                        "funasr.ctc.missing_tensors"}
    assert fields(reader)["funasr.ctc.status"] == "absent"
    assert len(names) == len([k for k in load_sd(folder) if not k.startswith("llm.")]) + 1


def test_containers_convert_identically(tmp_path):
    """flat / {'state_dict'} / 'module.' prefix: the same weights give the same GGUF tensors."""
    outs = []
    for i, (container, prefix) in enumerate([("flat", False), ("state_dict", True)]):
        folder = tmp_path / f"c{i}" / "model"
        write_checkpoint(folder, seed=5, container=container, module_prefix=prefix, dtype="fp32")
        outs.append(convert(folder, tmp_path / f"o{i}", llm_type="f32", mmproj_type="f32", progress=False))
    for a, b in zip(*outs):
        ta, tb = tensors(GGUFReader(a)), tensors(GGUFReader(b))
        assert ta.keys() == tb.keys()
        for name in ta:
            np.testing.assert_array_equal(ta[name][1], tb[name][1], err_msg=name)


# ----------------------------------------------------------------------------- LLM

def test_llm_metadata_and_weights(converted, ckpt):
    reader = GGUFReader(converted["f32"][0])
    f = fields(reader)
    cfg = json.loads((ckpt / "Qwen3-0.6B/config.json").read_text())
    tok = json.loads((ckpt / "Qwen3-0.6B/tokenizer.json").read_text())
    assert f["general.architecture"] == "qwen3"
    assert f["qwen3.embedding_length"] == cfg["hidden_size"]
    assert f["qwen3.block_count"] == cfg["num_hidden_layers"]
    assert f["qwen3.feed_forward_length"] == cfg["intermediate_size"]
    assert f["qwen3.attention.head_count"] == cfg["num_attention_heads"]
    assert f["qwen3.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert f["qwen3.attention.key_length"] == f["qwen3.attention.value_length"] == cfg["head_dim"]
    assert cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"]
    assert f["qwen3.rope.freq_base"] == pytest.approx(cfg["rope_theta"])
    assert f["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert f["qwen3.context_length"] == cfg["max_position_embeddings"]
    # tokenizer: every id, the specials as CONTROL, ids from the tokenizer files
    vocab = {i: t for t, i in tok["model"]["vocab"].items()} | {a["id"]: a["content"] for a in tok["added_tokens"]}
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "qwen2"
    assert f["tokenizer.ggml.tokens"] == [vocab[i] for i in range(cfg["vocab_size"])]
    types = f["tokenizer.ggml.token_type"]
    for a in tok["added_tokens"]:
        assert types[a["id"]] == (3 if a["special"] else 4), a["content"]
    assert len(f["tokenizer.ggml.merges"]) == len(tok["model"]["merges"])
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    assert f["tokenizer.ggml.eos_token_id"] == ids["<|im_end|>"]
    assert f["tokenizer.ggml.padding_token_id"] == ids["<|endoftext|>"]
    assert f["tokenizer.ggml.bos_token_id"] == cfg["bos_token_id"]
    assert f["tokenizer.ggml.add_bos_token"] is False
    # weights: tied head (no output.weight), every LLM tensor exact in f32
    sd = load_sd(ckpt)
    got = tensors(reader)
    assert "output.weight" not in got
    assert len(got) == len([k for k in sd if k.startswith("llm.")]) - 1  # lm_head folded into token_embd
    np.testing.assert_array_equal(got["token_embd.weight"][1], sd["llm.model.embed_tokens.weight"])
    np.testing.assert_array_equal(got["blk.1.attn_q_norm.weight"][1], sd["llm.model.layers.1.self_attn.q_norm.weight"])
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"][1], sd["llm.model.layers.0.mlp.down_proj.weight"])


def test_chat_template_reproduces_the_funasr_prompt(converted):
    import jinja2

    tmpl = fields(GGUFReader(converted["f16"][0]))["tokenizer.chat_template"]
    user = "语音转写成中文，不进行文本规整：<__media__>"
    text = jinja2.Environment().from_string(tmpl).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True)
    assert text == SYSTEM + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"


def test_llm_weight_types(converted):
    for kind, want in (("f16", QT.F16), ("q8_0", QT.Q8_0)):
        for t in GGUFReader(converted[kind][0]).tensors:
            assert t.tensor_type == (QT.F32 if len(t.shape) == 1 else want), (kind, t.name)


# ----------------------------------------------------------------------------- bad inputs

def broken_copy(ckpt, tmp_path, edit_sd=None, edit_cfg=None):
    folder = tmp_path / "broken"
    shutil.copytree(ckpt, folder)
    if edit_sd:
        sd = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        edit_sd(sd.get("state_dict", sd))
        torch.save(sd, folder / "model.pt")
    if edit_cfg:
        (folder / "config.yaml").write_text(edit_cfg((folder / "config.yaml").read_text()))
    return folder


def assert_no_output(outdir):
    assert not outdir.exists() or list(outdir.iterdir()) == []


@pytest.mark.parametrize("case,exc,match", [
    ("missing model.pt", FileNotFoundError, "model.pt is missing"),
    ("missing tokenizer", FileNotFoundError, "tokenizer.json is missing"),
    ("truncated model.pt", ValueError, "model.pt"),
    ("unknown key", ReleaseError, "unexpected tensor audio_encoder.extra.weight"),
    ("missing key", ReleaseError, "missing tensor audio_encoder.tp_norm.bias"),
    ("shape mismatch", ReleaseError, r"audio_adaptor.linear2.weight has shape"),
    ("config contradicts weights", ReleaseError, "missing tensor audio_encoder.encoders.2"),
    ("not fun-asr", ReleaseError, "expected 'FunASRNano'"),
])
def test_bad_inputs(ckpt, tmp_path, case, exc, match):
    edits = {
        "missing model.pt": lambda f: (f / "model.pt").unlink(),
        "missing tokenizer": lambda f: (f / "Qwen3-0.6B/tokenizer.json").unlink(),
        "truncated model.pt": lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:200_000]),
    }
    sd_edits = {
        "unknown key": lambda sd: sd.__setitem__("audio_encoder.extra.weight", torch.zeros(3)),
        "missing key": lambda sd: sd.pop("audio_encoder.tp_norm.bias"),
        "shape mismatch": lambda sd: sd.__setitem__("audio_adaptor.linear2.weight",
                                                    sd["audio_adaptor.linear2.weight"][:-1]),
    }
    cfg_edits = {
        "config contradicts weights": lambda t: t.replace("num_blocks: 3", "num_blocks: 4"),
        "not fun-asr": lambda t: t.replace("model: FunASRNano", "model: SenseVoiceSmall"),
    }
    folder = broken_copy(ckpt, tmp_path, sd_edits.get(case), cfg_edits.get(case))
    if case in edits:
        edits[case](folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(exc, match=match):
        convert(folder, tmp_path / "out", llm_type="f32", mmproj_type="f32", progress=False)
    assert_no_output(tmp_path / "out")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before, "inputs are never modified"


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        convert(tmp_path / "nope", tmp_path / "out")


def test_unwritable_outdir(ckpt, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot create output directory " + str(blocker / "out")):
        convert(ckpt, blocker / "out", progress=False)
    if os.geteuid() != 0:  # permission bits do not bind root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(PermissionError, match="not writable: " + str(ro)):
            convert(ckpt, ro, progress=False)


def test_failed_write_keeps_the_existing_output(ckpt, tmp_path, monkeypatch):
    """An existing GGUF is only replaced by a complete one; no temp file is left behind."""
    out = tmp_path / "out"
    llm, mmproj = convert(ckpt, out, llm_type="f32", mmproj_type="f32", progress=False)
    old = mmproj.read_bytes()
    import funasr_cpp.converters.gguf_out as gguf_out

    def boom(t):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(gguf_out, "_encode", boom)
    with pytest.raises(OSError, match="disk full"):
        convert(ckpt, out, llm_type="f32", mmproj_type="f32", progress=False)
    assert mmproj.read_bytes() == old
    assert sorted(p.name for p in out.iterdir()) == sorted([llm.name, mmproj.name])


# ----------------------------------------------------------------------------- command line

def test_cli_convert(ckpt, tmp_path):
    import subprocess

    exe = shutil.which("funasr-cpp", path=scripts_path_env()["PATH"])
    out = subprocess.run([exe, "convert", str(ckpt), "--outdir", str(tmp_path / "o"), "--llm-type", "q8_0",
                          "--mmproj-type", "f16"], capture_output=True, text=True, env=scripts_path_env())
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "fun-asr-nano-tiny-q8_0.gguf", "mmproj-fun-asr-nano-tiny-f16.gguf"]
    bad = subprocess.run([exe, "convert", str(tmp_path / "missing"), "--outdir", str(tmp_path / "o2")],
                         capture_output=True, text=True, env=scripts_path_env())
    assert bad.returncode == 1 and bad.stderr.startswith("error: model folder not found")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_converters_run_as_a_module(ckpt, tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "funasr_cpp.converters", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--outdir" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "funasr_cpp.converters", str(ckpt), "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fun-asr-nano-tiny-f16.gguf").exists()


# a child Python in which the native extensions cannot be imported, as where they were never built
def test_hidden_extension_really_is_hidden():
    out = run_without_native("import funasr_cpp; funasr_cpp.Model")
    assert out.returncode != 0 and "funasr_cpp._core is hidden" in out.stderr, out.stderr


def test_converters_import_and_convert_without_the_native_extension(ckpt, tmp_path):
    out = run_without_native("""
import runpy, sys
import funasr_cpp.converters, funasr_cpp.keys, funasr_cpp.prompt
from funasr_cpp.converters import convert
llm, mmproj = convert(sys.argv[1], sys.argv[2], llm_type="f32", mmproj_type="q8_0", progress=False)
print(llm.name, mmproj.name)
sys.argv = ["funasr_cpp.converters", "--help"]
try:
    runpy.run_module("funasr_cpp.converters", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert exc.code == 0, exc.code
loaded = sorted(m for m in sys.modules if m.startswith("funasr_cpp") and not m.startswith("funasr_cpp.converters"))
print("loaded:", " ".join(loaded))
""", str(ckpt), str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "fun-asr-nano-tiny-f32.gguf mmproj-fun-asr-nano-tiny-q8_0.gguf" in out.stdout
    assert "--outdir" in out.stdout
    loaded = out.stdout.split("loaded:")[1].split()
    assert "funasr_cpp._core" not in loaded and "funasr_cpp._native" not in loaded, loaded
    assert (tmp_path / "mmproj-fun-asr-nano-tiny-q8_0.gguf").stat().st_size > 0


def test_llm_failure_leaves_no_mmproj(ckpt, tmp_path):
    """Both files appear together or not at all (a bad tokenizer is found after the mmproj is written)."""
    folder = tmp_path / "badtok"
    shutil.copytree(ckpt, folder)
    tc = json.loads((folder / "Qwen3-0.6B/tokenizer_config.json").read_text())
    tc["eos_token"] = "<|no-such-token|>"
    (folder / "Qwen3-0.6B/tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(ReleaseError, match=re.escape("eos_token '<|no-such-token|>' is not in the vocabulary")):
        convert(folder, tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []
