"""_core.AsrModel + funasr_cpp.prompt: token-exact parity with upstream funasr AutoModel.generate
(greedy, fp32, dither 0) on the tiny random checkpoint, for every prompt option."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fixtures.engine import AsrModel
from fixtures.speech import wav16k_samples
from fixtures.upstream import MAX_TOKENS, OPTIONS
from funasr_cpp.prompt import MEDIA_MARKER, build_prompt, postprocess


@pytest.fixture(scope="module")
def setup(soft_release, soft_gguf, speech, speech_wavs):
    llm, mmproj = soft_gguf
    # what upstream reads back from the 16-bit wav files
    samples = {f"speech-{lang}": wav16k_samples(x) for lang, x in speech.items()}
    return {"folder": soft_release, "llm": llm, "mmproj": mmproj, "wavs": speech_wavs, "samples": samples}


@pytest.fixture(scope="module")
def asr(setup):
    # one thread: the 2-core CI machine also runs torch; ggml spin barriers crawl when oversubscribed
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1, kv_type="f32", flash_attn="off") as m:
        yield m


@pytest.fixture(scope="module")
def upstream(setup, soft_upstream):
    """{(audio, option): {"ids", "text", "prompt", "prompt_ids"}} from funasr AutoModel.generate."""
    results = {}
    for name, wav in setup["wavs"].items():
        for option, kwargs in OPTIONS.items():
            res = soft_upstream.generate(wav, max_length=MAX_TOKENS, **kwargs)
            # prefix, suffix (then the assistant placeholder "null" as the training target)
            (prefix, prefix_ids), (suffix, suffix_ids) = res["encoded"][:2]
            results[name, option] = {"ids": res["ids"], "text": res["text"], "prompt": prefix + MEDIA_MARKER + suffix,
                                     "prompt_ids": (prefix_ids, suffix_ids)}
    return results


@pytest.mark.parametrize("option", list(OPTIONS))
def test_prompt_equals_upstream(upstream, asr, option):
    up = upstream["speech-zh", option]
    ours = build_prompt(**OPTIONS[option])
    assert ours == up["prompt"]
    # and the separately tokenized text around the marker gives upstream's ids
    prefix, suffix = ours.split(MEDIA_MARKER)
    assert (asr.tokenize(prefix), asr.tokenize(suffix)) == tuple(up["prompt_ids"])


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", ["speech-zh", "speech-en"])
def test_tokens_and_text_equal_upstream(setup, upstream, asr, name, option):
    up = upstream[name, option]
    res = asr.generate(setup["samples"][name], build_prompt(**OPTIONS[option]), max_new_tokens=MAX_TOKENS)
    up_ids = list(up["ids"])
    while up_ids and asr.is_eog(up_ids[-1]):  # HF keeps the final <|im_end|>, we do not
        up_ids.pop()
    ours = res.tokens
    if ours != up_ids:
        i = next((k for k, (a, b) in enumerate(zip(ours, up_ids)) if a != b), min(len(ours), len(up_ids)))
        pytest.fail(f"first difference at generated token {i}: ours "
                    f"{ours[i] if i < len(ours) else 'end'} vs upstream {up_ids[i] if i < len(up_ids) else 'end'} "
                    f"(lengths {len(ours)} / {len(up_ids)})")
    assert postprocess(asr.detokenize(ours)) == up["text"]
    assert len(up["text"]) > 0
    assert 0 < res.n_audio_tokens < res.n_prompt_tokens
    assert all(getattr(res, k) >= 0 for k in ("frontend_ms", "encode_ms", "prefill_ms", "decode_ms"))
    assert res.n_decoded_tokens == len(ours) - 1  # the first token comes from the prefill's logits


def test_ignore_eos_generates_the_whole_budget(plain_gguf):
    # the default (unsoftened) tiny model ends its answer early on some noise inputs
    llm, mmproj = plain_gguf
    n = 64
    with AsrModel(llm, mmproj, n_threads=1) as m:
        eog = np.array([m.is_eog(i) for i in range(m.n_vocab)])
        rng = np.random.default_rng(0)
        stopped_early = 0
        for _ in range(16):
            x = (rng.standard_normal(int(rng.integers(400, 32000))) * 0.1 * rng.random()).astype(np.float32)
            plain = m.generate(x, build_prompt(), max_new_tokens=n)
            full = m.generate(x, build_prompt(), max_new_tokens=n, ignore_eos=True, return_logits=True)
            tokens = np.array(full.tokens)
            assert len(tokens) == n and full.n_decoded_tokens == n - 1 and not eog[tokens].any()
            # every token is the first maximum of its logits over the non-EOG tokens
            assert (np.where(eog, -np.inf, full.logits).argmax(axis=1) == tokens).all()
            assert full.tokens[:len(plain.tokens)] == plain.tokens
            stopped_early += len(plain.tokens) < n
        assert stopped_early >= 1  # the EOG-skipping path was exercised


def test_prompt_prefix_kept_in_the_kv_cache(setup):
    x, y = setup["samples"]["speech-zh"], setup["samples"]["speech-en"]
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1) as m:
        first = m.generate(x, build_prompt(), max_new_tokens=16, return_logits=True)
        again = m.generate(x, build_prompt(), max_new_tokens=16, return_logits=True)
        other_audio = m.generate(y, build_prompt(), max_new_tokens=16, return_logits=True)
        other_prompt = m.generate(y, build_prompt(**OPTIONS["all"]), max_new_tokens=16)
    assert first.n_cached_tokens == 0
    # the system turn + instruction before the audio is not prefilled again
    prefix = len(_prefix_ids(setup, build_prompt()))
    assert again.n_cached_tokens == other_audio.n_cached_tokens == prefix > 0
    assert other_prompt.n_cached_tokens == 0  # another instruction: a fresh prefill
    assert again.tokens == first.tokens and np.array_equal(again.logits, first.logits)
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1) as fresh:
        ref = fresh.generate(y, build_prompt(), max_new_tokens=16, return_logits=True)
    assert other_audio.tokens == ref.tokens and np.array_equal(other_audio.logits, ref.logits)


def _prefix_ids(setup, prompt):
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1) as m:
        return m.tokenize(prompt.split(MEDIA_MARKER)[0])


def test_context_is_sized_to_the_input(setup):
    x = setup["samples"]["speech-zh"]
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1) as m:  # n_ctx=0: automatic
        assert m.n_ctx == 1024
        m.generate(x, build_prompt(), max_new_tokens=8)
        assert m.n_ctx == 1024
        # prompt + 1100 new tokens need a second step of 1024 cells
        res = m.generate(x, build_prompt(), max_new_tokens=1100, ignore_eos=True)
        assert m.n_ctx == 2048 and len(res.tokens) == 1100
        assert m.generate(x, build_prompt(), max_new_tokens=8).tokens == res.tokens[:8]
    with AsrModel(setup["llm"], setup["mmproj"], n_threads=1, n_ctx=256) as m:  # a fixed size is kept
        res = m.generate(x, build_prompt(), max_new_tokens=1100, ignore_eos=True)
        assert m.n_ctx == 256 and res.n_prompt_tokens + len(res.tokens) == 256


def test_iso_codes_give_the_same_prompt():
    assert build_prompt(language="zh") == build_prompt(language="中文")
    assert build_prompt(language="EN") == build_prompt(language="英文")
    assert build_prompt(language="tl") == build_prompt(language="fil") == build_prompt(language="菲律宾语")
    assert "语音转写成日文：" in build_prompt(language="ja")
    assert build_prompt().count(MEDIA_MARKER) == 1


def test_bad_prompt_options():
    with pytest.raises(TypeError, match="list"):
        build_prompt(hotwords="abc")
    with pytest.raises(TypeError):
        build_prompt(hotwords=["ok", 3])
    with pytest.raises(ValueError, match="klingon.*中文.*zh"):
        build_prompt(language="klingon")
    # an empty list is no hotwords at all
    assert build_prompt(hotwords=[]) == build_prompt() == build_prompt(hotwords=None)


def test_postprocess():
    assert postprocess("a/silb  \n c\t") == "a b c "
    assert postprocess("") == ""


def test_mismatched_llm_and_mmproj(setup, mmproj_192):
    with pytest.raises(ValueError, match=r"embedding width does not match.*192.*128"):
        AsrModel(setup["llm"], mmproj_192, n_threads=1)


def test_missing_and_invalid_files(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.gguf"))):
        AsrModel(tmp_path / "nope.gguf", setup["mmproj"])
    with pytest.raises(FileNotFoundError, match="nope-mmproj"):
        AsrModel(setup["llm"], tmp_path / "nope-mmproj.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    with pytest.raises(ValueError, match="junk.gguf"):
        AsrModel(setup["llm"], junk)


def test_audio_shorter_than_one_frame(asr):
    for n in (0, 1, 300, 399):  # < 25 ms: no audio rows, still an answer
        res = asr.generate(np.zeros(n, np.float32), build_prompt(), max_new_tokens=4)
        assert res.n_audio_tokens == 0 and res.n_prompt_tokens > 0
        assert len(res.tokens) <= 4


def test_bad_generate_inputs(asr):
    x = np.zeros(1600, np.float32)
    with pytest.raises(ValueError, match="exactly once"):
        asr.generate(x, "no marker")
    with pytest.raises(ValueError, match="exactly once"):
        asr.generate(x, MEDIA_MARKER * 2 + "x")
    with pytest.raises(ValueError, match="1-D"):
        asr.generate(np.zeros((2, 800), np.float32), build_prompt())
    with pytest.raises(TypeError, match="floating"):
        asr.generate(np.zeros(800, np.int16), build_prompt())


def test_close(setup):
    m = AsrModel(setup["llm"], setup["mmproj"], n_threads=1)
    m.close()
    m.close()
    assert m.closed
    with pytest.raises(RuntimeError, match="closed"):
        m.generate(np.zeros(1600, np.float32), build_prompt())
