"""The engine's job kinds for live transcription (_core.AsrModel.submit): encoder-only CTC jobs
(ctc_only: one encoder pass, no LLM, no slot) and priorities (0 = finals before 1 = partials).
The oracles: a ctc_only job's CTC outputs are those of a full job with ctc=True on the same audio
(the CTC branch of the same encoder pass, held to upstream by test_ctc.py); decoding beside
ctc_only jobs gives what the same job gives alone (held to upstream by test_asr_parity.py).
Orders are observed through Generation.admitted, the engine's admission counter: deterministic,
no wall clock."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fixtures.engine import AsrModel, assert_same_tokens
from fixtures.speech import wav16k_samples
from funasr_cpp.prompt import build_prompt

N_TOKENS = 16
EXACT = dict(n_threads=1, kv_type="f32", flash_attn="off")  # as test_batching: exact KV, one thread
JOIN_S = 120     # a bound on every thread of these tests


def _clips(speech):
    zh, en = wav16k_samples(speech["zh"]), wav16k_samples(speech["en"])
    noise = (np.random.default_rng(5).standard_normal(20000) * 0.05).astype(np.float32)
    return {"zh": zh, "en": en, "zh-half": zh[: zh.size // 2], "noise": noise,
            "en-third": en[: en.size // 3], "below-a-frame": np.zeros(200, np.float32)}


@pytest.fixture(scope="module")
def clips(speech):
    return _clips(speech)


@pytest.fixture(scope="module")
def asr(ctc_gguf):
    with AsrModel(*ctc_gguf, n_parallel=1, **EXACT) as m:
        yield m


def _run_threads(targets):
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads), "a job did not finish"


# ----------------------------------------------------------------------------- ctc_only
@pytest.mark.parametrize("name", ["zh", "en", "zh-half", "noise", "below-a-frame"])
def test_ctc_only_equals_the_ctc_branch_of_a_full_job(asr, clips, name):
    x = clips[name]
    full = asr.generate(x, build_prompt(), max_new_tokens=N_TOKENS, ctc=True)
    only = asr.generate(x, "", ctc_only=True)  # the prompt is not used
    assert only.ctc_best == full.ctc_best and only.ctc_text == full.ctc_text
    assert (name == "below-a-frame") == (len(only.ctc_best) == 0)
    # no LLM: no tokens, no prompt, no prefill or decode
    assert only.tokens == [] and only.text == "" and only.n_prompt_tokens == 0
    assert only.n_decoded_tokens == 0 and only.prefill_ms == 0 and only.decode_ms == 0
    assert only.n_audio_tokens == full.n_audio_tokens
    assert only.frontend_ms > 0 and (only.encode_ms > 0) == (len(only.ctc_best) > 0)


def test_ctc_only_with_ctc_keeps_the_features(asr, clips):
    """ctc=True on a ctc_only job keeps the CTC features too (timestamps of a partial)."""
    x = clips["en"]
    full = asr.generate(x, build_prompt(), max_new_tokens=1, ctc=True)
    only = asr.generate(x, "", ctc_only=True, ctc=True)
    ids = list(range(min(8, asr.ctc_vocab_size)))
    np.testing.assert_array_equal(asr.ctc_log_probs(only, ids), asr.ctc_log_probs(full, ids))


def test_ctc_only_needs_a_ctc_head(soft_gguf, clips):
    with AsrModel(*soft_gguf, n_parallel=1, **EXACT) as m:
        assert not m.has_ctc
        with pytest.raises(ValueError, match="no CTC branch.*encoder-only"):
            m.submit(clips["en"], "", ctc_only=True)
        # the model still decodes
        assert m.generate(clips["en"], build_prompt(), max_new_tokens=2).n_decoded_tokens > 0


def test_ctc_only_takes_no_slot(ctc_gguf, clips):
    """With n_parallel=1 and a long job in the only slot, a ctc_only job queued behind it runs at
    once: the waiter of the ctc_only job drives one step (admit A, run the encoder job, one decode
    step) and returns with A still decoding."""
    with AsrModel(*ctc_gguf, n_parallel=1, **EXACT) as m:
        alone = m.generate(clips["zh"], build_prompt(), max_new_tokens=40, ignore_eos=True)
        a = m.submit(clips["zh"], build_prompt(), max_new_tokens=40, ignore_eos=True)
        x = m.submit(clips["en"], "", ctc_only=True)
        ref = m.generate(clips["en"], "", ctc_only=True)
        got = x.result()
        assert not a.done
        assert got.ctc_best == ref.ctc_best
        assert a.result().tokens == alone.tokens and len(alone.tokens) == 40
        assert got.admitted == a.result().admitted + 1


def test_priority_1_waits_while_a_priority_0_job_runs(ctc_gguf, clips):
    """Background work never runs beside a normal job, even with free slots: a priority-1 ctc_only
    job and a priority-1 decoding job submitted while A decodes both start after A has finished
    (their waiter drives A to its end first), and A's tokens are those it has alone."""
    with AsrModel(*ctc_gguf, n_parallel=2, **EXACT) as m:
        alone = m.generate(clips["zh"], build_prompt(), max_new_tokens=40, ignore_eos=True)
        a = m.submit(clips["zh"], build_prompt(), max_new_tokens=40, ignore_eos=True)
        x = m.submit(clips["en"], "", ctc_only=True, priority=1)
        b = m.submit(clips["en"], build_prompt(), max_new_tokens=4, priority=1)
        got = x.result()
        assert a.done and a.result().tokens == alone.tokens
        assert got.admitted > a.result().admitted
        assert b.result().admitted > a.result().admitted and len(b.result().tokens) > 0


def test_ctc_only_jobs_beside_decoding_from_threads(ctc_gguf, clips):
    """Decoding jobs and ctc_only jobs from several threads on one engine: every decode equals the
    same job alone, every ctc_only job equals its run alone."""
    decode = [("zh", build_prompt()), ("en", build_prompt()), ("zh-half", build_prompt()), ("noise", build_prompt())]
    with AsrModel(*ctc_gguf, n_parallel=1, **EXACT) as m:
        alone = [m.generate(clips[c], p, max_new_tokens=N_TOKENS, return_logits=True) for c, p in decode]
        ctc_alone = {c: m.generate(x, "", ctc_only=True) for c, x in clips.items()}
    out, ctc_out, errors = [None] * len(decode), [], []
    with AsrModel(*ctc_gguf, n_parallel=2, **EXACT) as m:
        start = threading.Barrier(len(decode) * 2)

        def decoder(k):
            def run():
                start.wait()
                try:
                    out[k] = m.generate(clips[decode[k][0]], decode[k][1], max_new_tokens=N_TOKENS,
                                        return_logits=True)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
            return run

        def partials(k):
            def run():
                start.wait()
                try:
                    for c in list(clips)[k % 2::2]:  # several encoder jobs per thread, queued one by one
                        ctc_out.append((c, m.submit(clips[c], "", ctc_only=True, priority=k % 2).result()))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
            return run

        _run_threads([decoder(k) for k in range(len(decode))] + [partials(k) for k in range(len(decode))])
    assert not errors, errors
    for k, (ours, ref) in enumerate(zip(out, alone)):
        assert_same_tokens(ours, ref, f"decode job {k} beside ctc_only jobs")
    assert len(ctc_out) == len(decode) * len(clips) // 2
    for c, g in ctc_out:
        assert g.ctc_best == ctc_alone[c].ctc_best and g.ctc_text == ctc_alone[c].ctc_text and g.tokens == []


# ----------------------------------------------------------------------------- priority
def test_priority_0_is_admitted_before_queued_priority_1(ctc_gguf, clips):
    """n_parallel=1: A (normal, long) runs; then B1 (background), C (normal), B2 (background,
    ctc_only), D (normal) are queued: they start A, C, D, B1, B2 (FIFO within a priority). Whether
    A is already running when they are submitted or not, the order is the same."""
    prompt = build_prompt()
    with AsrModel(*ctc_gguf, n_parallel=1, **EXACT) as m:
        results = {}
        a = m.submit(clips["zh"], prompt, max_new_tokens=48, ignore_eos=True)
        waiter = threading.Thread(target=lambda: results.__setitem__("A", a.result()), daemon=True)
        waiter.start()
        jobs = {"B1": m.submit(clips["en"], prompt, max_new_tokens=4, priority=1),
                "C": m.submit(clips["en"], prompt, max_new_tokens=4),
                "B2": m.submit(clips["en"], "", ctc_only=True, priority=1),
                "D": m.submit(clips["zh-half"], prompt, max_new_tokens=4, priority=0)}
        cancelled = m.submit(clips["en"], prompt, max_new_tokens=4, priority=1)
        cancelled.cancel()  # a queued background job can be dropped
        # waited in the reverse order of their admission, from other threads
        _run_threads([lambda k=k: results.__setitem__(k, jobs[k].result()) for k in ("B2", "B1", "D", "C")])
        waiter.join(JOIN_S)
        assert not waiter.is_alive()
        with pytest.raises(RuntimeError, match="cancelled"):
            cancelled.result()
    order = sorted(results, key=lambda k: results[k].admitted)
    assert order == ["A", "C", "D", "B1", "B2"], {k: g.admitted for k, g in results.items()}
    assert len(results["A"].tokens) == 48


def test_bad_priority(asr, clips):
    for p in (-1, 2):
        with pytest.raises(ValueError, match="priority must be 0 .normal. or 1 .background., got"):
            asr.submit(clips["en"], build_prompt(), max_new_tokens=1, priority=p)
