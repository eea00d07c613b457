"""The device choice (LoadOptions.device, Model(device=...), --device, `funasr-cpp info`) on the build
under test, whichever backends it has: "cpu" and "auto" give the tokens the defaults give, a name that
is no device here is a ValueError listing the devices there are, the CLI and the C++ example take
--device, and `info` lists every device with its memory. (The same API on a GPU device, against the
CPU parity oracles: tests/test_vulkan.py.)"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import funasr_cpp
from fixtures.cli import run_cli
from funasr_cpp import Model, _core, _testing
from funasr_cpp.cli import build_parser, common
from funasr_cpp.llm import LlamaModel
from funasr_cpp.options import LoadOptions

LOAD = {"n_threads": 1, "kv_type": "f32", "flash_attn": "off"}
DECODE = {"vad": None, "max_new_tokens": 16, "max_tokens_per_second": None, "repetition_guard": False}
EXAMPLE = Path(funasr_cpp.__file__).resolve().parent / "lib" / "funasr-transcribe"


@pytest.fixture(scope="module")
def info():
    return funasr_cpp.system_info()


@pytest.fixture(scope="module")
def default_tokens(soft_gguf, speech_wavs):
    """Each clip's tokens from a Model loaded with the defaults (no device given)."""
    with Model(*soft_gguf, **LOAD) as m:
        return {name: m.transcribe(wav, **DECODE).segments[0].tokens for name, wav in sorted(speech_wavs.items())}


def _tokens(model, speech_wavs) -> dict:
    return {name: model.transcribe(wav, **DECODE).segments[0].tokens for name, wav in sorted(speech_wavs.items())}


# ------------------------------------------------------------------------------ what there is
def test_system_info_lists_every_device_with_its_memory(info):
    raw = _core.system_info()
    assert len(info.devices) == len(raw["devices"]) >= 1
    for d in info.devices:
        assert d["name"] == d["ggml_name"].lower()
        assert d["backend"] in info.backend_names
        assert d["type"] in ("cpu", "gpu", "igpu", "accel")
        assert d["description"] and 0 <= d["memory_free"] <= d["memory_total"]
    cpu = [d for d in info.devices if d["type"] == "cpu"]
    assert [d["name"] for d in cpu] == ["cpu"] and cpu[0]["backend"] == "CPU" and cpu[0]["selectable"]
    assert cpu[0]["memory_total"] > 0  # the host's memory
    assert "cpu" in info.device_names and "auto" not in info.device_names
    gpus = [d["name"] for t in ("gpu", "igpu") for d in info.devices if d["type"] == t]
    assert info.auto_device == (gpus[0] if gpus else "cpu")  # the first GPU, else the CPU
    assert _core.resolve_device("auto") == info.auto_device


def test_info_command_lists_the_devices(info):
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    for d in info.devices:
        line = next((ln for ln in out.stdout.splitlines() if ln.strip().startswith(f"device {d['name']} (")), None)
        assert line is not None, out.stdout
        assert f"({d['ggml_name']}, {d['type']}): {d['description']}, " in line and " MiB free of " in line
    assert f"device auto: {info.auto_device} " in out.stdout and "auto, cpu" in out.stdout


# ------------------------------------------------------------------------------ choosing one
def test_load_options_device():
    assert LoadOptions().device == "auto"
    assert LoadOptions(device=" CPU ").device == "cpu"  # case-insensitive, stored as the engine names it
    assert LoadOptions.build(device="Vulkan0").engine_kwargs()["device"] == "vulkan0"
    with pytest.raises(TypeError, match="device must be a str"):
        LoadOptions(device=0)
    with pytest.raises(ValueError, match="device must be a device name"):
        LoadOptions(device=" ")


def test_cpu_and_auto_give_the_default_tokens(soft_gguf, speech_wavs, default_tokens, info):
    for device, want in (("cpu", "cpu"), ("CPU", "cpu"), ("auto", info.auto_device)):
        with Model(*soft_gguf, device=device, **LOAD) as m:
            assert m.device == want and m.load_options.device == device.lower()
            assert m.encoder_device == want
            got = _tokens(m, speech_wavs)
        if want == info.auto_device:  # the device the defaults use: the very same tokens
            assert got == default_tokens, device
    with Model(*soft_gguf, use_gpu=False, **LOAD) as m:  # the encoder on the CPU, the LLM where auto puts it
        assert m.device == info.auto_device and m.encoder_device == "cpu"


def test_an_unknown_device_names_those_there_are(soft_gguf, tiny_qwen3, info):
    names = ["auto", *info.device_names]
    for bad in ("nosuch0", "metal7", "cuda99"):
        for load in (lambda: Model(*soft_gguf, device=bad, **LOAD),
                     lambda: LlamaModel(tiny_qwen3[0], device=bad),
                     lambda: _testing.AudioEncoder(str(soft_gguf[1]), device=bad)):
            with pytest.raises(ValueError, match=f"unknown device '{bad}'") as exc:
                load()
            msg = str(exc.value)
            assert all(n in msg for n in names) and "cpu" in msg and "funasr-cpp info" in msg


def test_llama_model_and_encoder_on_the_cpu(soft_gguf, tiny_qwen3, info):
    with LlamaModel(tiny_qwen3[0], device="cpu", n_ctx=256) as llm:
        assert llm.device == "cpu" and "device=cpu" in repr(llm)
    with LlamaModel(tiny_qwen3[0], n_ctx=256) as llm:
        assert llm.device == info.auto_device
    assert _testing.AudioEncoder(str(soft_gguf[1]), device="cpu").device == "cpu"
    assert _testing.AudioEncoder(str(soft_gguf[1]), use_gpu=False).device == "cpu"


# ------------------------------------------------------------------------------ the commands
def _parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def test_cli_device_flags(capsys):
    for command in (["transcribe", "x.wav"], ["stream", "x.wav"], ["serve"], ["transcribe-dataset", "in", "-o", "o"]):
        assert common.load_options(_parse(*command, "--device", "Vulkan0")) == {"device": "Vulkan0"}, command
        assert common.load_options(_parse(*command, "--cpu")) == {"device": "cpu"}, command
        assert "device" not in common.load_options(_parse(*command))
        with pytest.raises(SystemExit) as exc:  # one or the other
            _parse(*command, "--cpu", "--device", "cpu")
        assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    for command in ("transcribe", "serve", "stream"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "--device NAME" in out and f"default {LoadOptions.device}" in out
        assert "the same as --device cpu" in out


def test_cli_transcribes_on_the_device(soft_gguf, speech_wavs, info):
    llm, mmproj = soft_gguf
    wav = speech_wavs["speech-en"]
    flags = ["--llm", llm, "--mmproj", mmproj, "-t", 1, "--vad", "none", "--max-new-tokens", 8, "--format", "json"]
    tokens = {}
    for device in (["--device", "cpu"], ["--cpu"], ["--device", "AUTO"], []):
        out = run_cli("transcribe", *flags, *device, wav)
        assert out.returncode == 0, out.stderr
        tokens[" ".join(device)] = [s["tokens"] for s in json.loads(out.stdout)["segments"]]
    assert tokens["--device cpu"] == tokens["--cpu"]
    assert tokens["--device AUTO"] == tokens[""]
    if info.auto_device == "cpu":
        assert tokens["--cpu"] == tokens[""]
    out = run_cli("transcribe", *flags, "--device", "nosuch0", wav)
    assert out.returncode == 1 and out.stderr.startswith("error: unknown device 'nosuch0'")
    assert "cpu" in out.stderr


def test_the_example_takes_device(soft_gguf, speech_wavs):
    llm, mmproj = soft_gguf
    wav = speech_wavs["speech-zh"]

    def run(*args):
        argv = ["-m", llm, "--mmproj", mmproj, "-t", 1, *args, "--tokens", wav]
        return subprocess.run([str(EXAMPLE), *map(str, argv)],
                              capture_output=True, text=True, errors="replace", timeout=300, env={"PATH": "/usr/bin:/bin"})

    res = run("--device", "CPU", "-n", DECODE["max_new_tokens"])
    assert res.returncode == 0, res.stderr
    ids = [int(t) for t in res.stdout.rstrip("\n").split("\n")[-1].split()]
    # the example's KV cache is f16 and its flash attention auto: a Model loaded so
    with Model(llm, mmproj, n_threads=1, device="cpu") as m:
        assert ids == m.transcribe(wav, **DECODE).segments[0].tokens
    res = run("--device", "nosuch0")
    assert res.returncode == 1 and "error: unknown device 'nosuch0'" in res.stderr and "cpu" in res.stderr
