"""Session fixtures: artefacts that several test modules use exactly as they are, built once per
run. Tests only read them: a test that needs to change one works on its own copy.

    speech         {"zh", "en"}: the SPEECH sentences spoken by eSpeak NG, float32 at 16 kHz (read-only)
    speech_wavs    {"speech-zh", "speech-en"}: those clips as 16-bit WAV files
    soft_release   the tiny release folder, seed 0, no CTC tensors, soften_attention'd
    soft_gguf      its (llm, mmproj) f32 GGUF pair, alone in their folder
    soft_upstream  fixtures.upstream.Upstream on soft_release: the warmed-up oracle
    plain_release  the same release without soften_attention (the fixture's default, sharp attention)
    plain_gguf     its (llm, mmproj) f32 GGUF pair
    ctc_release    a tiny release with the CTC branch (seed 1, sharp attention)
    ctc_gguf       its (llm, mmproj) f32 GGUF pair (the mmproj has the CTC head and tokenizer)
    ctc_upstream   fixtures.upstream.Upstream on ctc_release (results carry upstream's CTC fields)
    mmproj_192     the f32 mmproj of a seed-1 release whose LLM is 192 wide (does not fit the 128-wide LLMs)
    tiny_qwen3     (path, metadata) of fixtures.tiny_llm_gguf.write_tiny_qwen3() with its defaults
    vad_gguf       the random-weight FSMN-VAD release (fixtures.vad_checkpoint, seed 0) as its GGUF

Process-level quirks, as in the modules: torch shares the process with our models (tests that
run both use n_threads=1 for ours); the oracle runs warmed up and without dither (Upstream)."""
import sys
import warnings
from pathlib import Path

import pytest

# test helpers (fixtures/) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _convert_f32(folder: Path, out: Path):
    from funasr_cpp.converters import convert
    from funasr_cpp.converters.release import ReleaseWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseWarning)  # "no CTC tensors": these releases have none
        return convert(folder, out, llm_type="f32", mmproj_type="f32", progress=False)


@pytest.fixture(scope="session")
def speech():
    from fixtures.speech import SPEECH, VOICES, espeak

    clips = {}
    for lang, text in SPEECH.items():
        x = espeak(text, VOICES[lang])
        x.flags.writeable = False
        clips[lang] = x
    return clips


@pytest.fixture(scope="session")
def speech_wavs(speech, tmp_path_factory):
    from fixtures.speech import write_wav16k

    tmp = tmp_path_factory.mktemp("speech")
    return {f"speech-{lang}": write_wav16k(tmp / f"speech-{lang}.wav", x) for lang, x in speech.items()}


@pytest.fixture(scope="session")
def soft_release(tmp_path_factory):
    from fixtures.checkpoint import soften_attention, write_checkpoint

    folder = tmp_path_factory.mktemp("soft") / "nano"
    write_checkpoint(folder, seed=0, ctc=False)
    soften_attention(folder)  # long greedy runs stay comparable (see soften_attention)
    return folder


@pytest.fixture(scope="session")
def soft_gguf(soft_release):
    return _convert_f32(soft_release, soft_release.parent / "gguf")


@pytest.fixture(scope="session")
def soft_upstream(soft_release, speech_wavs):
    from fixtures.upstream import Upstream

    return Upstream(soft_release, warmup_wav=speech_wavs["speech-en"])


@pytest.fixture(scope="session")
def plain_release(tmp_path_factory):
    from fixtures.checkpoint import write_checkpoint

    folder = tmp_path_factory.mktemp("plain") / "nano"
    write_checkpoint(folder, seed=0, ctc=False)
    return folder


@pytest.fixture(scope="session")
def plain_gguf(plain_release):
    return _convert_f32(plain_release, plain_release.parent / "gguf")


@pytest.fixture(scope="session")
def ctc_release(tmp_path_factory):
    """A tiny release with the CTC branch (ModelScope's layout: model.pt with ctc_decoder + ctc)."""
    from fixtures.checkpoint import write_checkpoint

    folder = tmp_path_factory.mktemp("ctc") / "nano"
    write_checkpoint(folder, seed=1, ctc=True)
    return folder


@pytest.fixture(scope="session")
def ctc_gguf(ctc_release):
    return _convert_f32(ctc_release, ctc_release.parent / "gguf")


@pytest.fixture(scope="session")
def ctc_upstream(ctc_release, speech_wavs):
    from fixtures.upstream import Upstream

    return Upstream(ctc_release, warmup_wav=speech_wavs["speech-en"])


@pytest.fixture(scope="session")
def mmproj_192(tmp_path_factory):
    from fixtures.checkpoint import write_checkpoint

    tmp = tmp_path_factory.mktemp("nano192")
    write_checkpoint(tmp / "nano192", seed=1, ctc=False, dims={"llm_hidden": 192})
    return _convert_f32(tmp / "nano192", tmp / "gguf")[1]


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    from fixtures.tiny_llm_gguf import write_tiny_qwen3

    path = tmp_path_factory.mktemp("llm") / "tiny-qwen3.gguf"
    return path, write_tiny_qwen3(path)


@pytest.fixture(scope="session")
def vad_gguf(tmp_path_factory):
    from fixtures.vad_checkpoint import write_vad_checkpoint
    from funasr_cpp.converters.vad_gguf import write_vad_gguf

    folder = tmp_path_factory.mktemp("vad") / "fsmn-vad"
    write_vad_checkpoint(folder, seed=0)
    return write_vad_gguf(folder, folder.parent / "gguf")
