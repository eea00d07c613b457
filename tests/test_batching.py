"""The batched engine of _core.AsrModel: jobs decoded together (continuous batching, shared prompt
prefix), speculative verification of drafts, concurrent callers, cancellation, closing and
per-job errors. The oracle is the same model decoding one job at a time (n_parallel=1), itself
held to upstream funasr by test_asr_parity.py."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fixtures.batch_jobs import mixed_jobs
from fixtures.engine import AsrModel, assert_same_tokens
from fixtures.speech import wav16k_samples
from fixtures.upstream import OPTIONS
from funasr_cpp.prompt import MEDIA_MARKER, build_prompt

N_TOKENS = 24
# parity settings as in test_asr_parity: exact KV, one thread, no flash attention
EXACT = dict(n_threads=1, kv_type="f32", flash_attn="off")
# below this gap between the best and the second-best logit two kernels may honestly disagree


@pytest.fixture(scope="module")
def jobs(speech):
    return mixed_jobs(speech)


@pytest.fixture(scope="module")
def sequential(soft_gguf, jobs):
    """Each job alone, with its logits."""
    with AsrModel(*soft_gguf, n_parallel=1, **EXACT) as m:
        return [m.generate(x, p, max_new_tokens=N_TOKENS, return_logits=True) for x, p in jobs]


@pytest.mark.parametrize("n_parallel", [2, 4, 8])
def test_batch_equals_one_at_a_time(soft_gguf, jobs, sequential, n_parallel):
    with AsrModel(*soft_gguf, n_parallel=n_parallel, **EXACT) as m:
        handles = [m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True) for x, p in jobs]
        results = [h.result() for h in handles]
    assert max(r.max_batch for r in results) == min(n_parallel, len(jobs))
    for k, (ours, ref) in enumerate(zip(results, sequential)):
        assert_same_tokens(ours, ref, f"job {k}")
        n = min(len(ours.logits), len(ref.logits))
        assert n > 0 and np.abs(ours.logits[:n] - ref.logits[:n]).max() < 1e-3
        assert (ours.n_prompt_tokens, ours.n_audio_tokens) == (ref.n_prompt_tokens, ref.n_audio_tokens)
    # the first job of each instruction prefills the text before the audio, the rest share it
    prefix_len = [r.n_cached_tokens for r in results]
    assert prefix_len[0] == 0 and prefix_len[1] > 0 and prefix_len[1] == prefix_len[2] == prefix_len[3]


def test_ignore_eos_jobs_end_independently(plain_gguf):
    """Jobs with different budgets in one batch; each ends at its own budget or end of turn."""
    rng = np.random.default_rng(3)
    xs = [(rng.standard_normal(int(rng.integers(800, 20000))) * 0.1).astype(np.float32) for _ in range(6)]
    budgets = [1, 5, 40, 12, 0, 33]
    with AsrModel(*plain_gguf, n_parallel=1, **EXACT) as m:
        alone = [m.generate(x, build_prompt(), max_new_tokens=n, ignore_eos=k % 2 == 0, return_logits=True)
                 for k, (x, n) in enumerate(zip(xs, budgets))]
    with AsrModel(*plain_gguf, n_parallel=3, **EXACT) as m:
        hs = [m.submit(x, build_prompt(), max_new_tokens=n, ignore_eos=k % 2 == 0, return_logits=True)
              for k, (x, n) in enumerate(zip(xs, budgets))]
        together = [h.result() for h in hs]
    for k, (a, b) in enumerate(zip(together, alone)):
        assert_same_tokens(a, b, f"job {k}")
        if k % 2 == 0:
            assert len(a.tokens) == budgets[k]


@pytest.mark.parametrize("kind", ["perfect", "useless", "edited"])
def test_speculative_output_equals_greedy(soft_gguf, jobs, sequential, kind):
    rng = np.random.default_rng(11)
    with AsrModel(*soft_gguf, n_parallel=4, **EXACT) as m:
        drafts = []
        for ref in sequential:
            t = list(ref.tokens)
            if kind == "useless":
                t = [int(v) for v in rng.integers(0, m.n_vocab, len(t) + 5)]
            elif kind == "edited" and len(t) > 6:  # a substitution, a deletion and an insertion
                t[2] = (t[2] + 1) % m.n_vocab
                del t[4]
                t.insert(len(t) - 2, 17)
            drafts.append(t)
        hs = [m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True, draft=d, draft_max=5)
              for (x, p), d in zip(jobs, drafts)]
        results = [h.result() for h in hs]
    for k, (ours, ref) in enumerate(zip(results, sequential)):
        assert_same_tokens(ours, ref, f"job {k} ({kind} draft)")
        assert ours.n_accepted_tokens <= ours.n_draft_tokens
    accepted = sum(r.n_accepted_tokens for r in results)
    drafted = sum(r.n_draft_tokens for r in results)
    generated = sum(len(r.tokens) for r in results)
    steps = sum(r.n_decoded_tokens for r in results)
    if kind == "perfect":  # every draft token is taken: up to draft_max + 1 tokens per step
        assert accepted == drafted and steps <= generated / 5
    elif kind == "edited":
        assert accepted > generated / 2
    else:
        assert accepted <= generated // 10


def test_concurrent_callers_are_batched(soft_gguf, jobs, sequential):
    with AsrModel(*soft_gguf, n_parallel=8, **EXACT) as m:
        out = [None] * len(jobs)
        start = threading.Barrier(len(jobs))

        def work(k):
            start.wait()
            out[k] = m.generate(*jobs[k], max_new_tokens=N_TOKENS, return_logits=True)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert max(r.max_batch for r in out) >= 2
    for k, (ours, ref) in enumerate(zip(out, sequential)):
        assert_same_tokens(ours, ref, f"thread {k}")


def test_a_failing_job_fails_alone(soft_gguf, jobs, sequential):
    x, p = jobs[0]
    with AsrModel(*soft_gguf, n_parallel=4, n_ctx=256, **EXACT) as m:
        good = m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True)
        too_long = m.submit(np.tile(x, 40), p, max_new_tokens=4)  # its prompt alone exceeds n_ctx
        also_good = m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True)
        with pytest.raises(ValueError, match="does not fit the context"):
            too_long.result()
        assert_same_tokens(good.result(), sequential[0], "before the failing job")
        assert_same_tokens(also_good.result(), sequential[0], "after the failing job")


def test_a_bad_prompt_queued_behind_others(soft_gguf, jobs, sequential):
    """n_ctx=0 sizes the cache from the queued jobs, reading them ahead: a bad one still gets its own error."""
    x, p = jobs[0]
    with AsrModel(*soft_gguf, n_parallel=4, **EXACT) as m:
        hs = [m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True),
              m.submit(x, p.split(MEDIA_MARKER)[0] + MEDIA_MARKER, max_new_tokens=4),  # nothing after the audio
              m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True)]
        assert_same_tokens(hs[0].result(), sequential[0], "before the bad prompt")
        with pytest.raises(ValueError, match="text after the media marker"):
            hs[1].result()
        assert_same_tokens(hs[2].result(), sequential[0], "after the bad prompt")


def test_cancel(soft_gguf, jobs, sequential):
    with AsrModel(*soft_gguf, n_parallel=2, **EXACT) as m:
        hs = [m.submit(x, p, max_new_tokens=N_TOKENS, return_logits=True) for x, p in jobs[:4]]
        hs[1].cancel()
        del hs[2]  # dropping a job cancels it
        with pytest.raises(RuntimeError, match="cancelled"):
            hs[1].result()
        for h, ref in ((hs[0], sequential[0]), (hs[2], sequential[3])):
            assert_same_tokens(h.result(), ref, "next to cancelled jobs")
        assert all(h.done for h in hs)


def test_close_while_a_batch_runs(plain_gguf):
    x = np.zeros(16000, np.float32)
    m = AsrModel(*plain_gguf, n_parallel=4, n_threads=1)
    errors = []

    def work():
        try:
            m.generate(x, build_prompt(), max_new_tokens=100000, ignore_eos=True)
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    m.close()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 3 and all("closed" in e for e in errors)
    with pytest.raises(RuntimeError, match="closed"):
        m.submit(x, build_prompt())


def test_memory_follows_the_active_jobs(soft_gguf, jobs):
    """n_ctx=0: the cache grows to hold the jobs that run together, never more than they need."""
    with AsrModel(*soft_gguf, n_parallel=8, n_threads=1) as m:
        assert m.n_ctx == 1024
        hs = [m.submit(x, p, max_new_tokens=400) for x, p in jobs]
        [h.result() for h in hs]
        need = sum(h.result().n_prompt_tokens for h in hs) + 400 * len(hs)
        assert 1024 < m.n_ctx and m.n_ctx - 1024 < need <= m.n_ctx


def test_bad_submit_arguments(soft_gguf):
    with AsrModel(*soft_gguf, n_parallel=1, n_threads=1) as m:
        with pytest.raises(ValueError, match="draft_max"):
            m.submit(np.zeros(800, np.float32), build_prompt(), draft_max=-1)
        with pytest.raises(ValueError, match="out of range|vocab"):
            m.submit(np.zeros(800, np.float32), build_prompt(), draft=[m.n_vocab])
    with pytest.raises(ValueError, match="n_parallel"):
        AsrModel(*soft_gguf, n_parallel=0)


# ---------------------------------------------------------------------------------------- Model
@pytest.fixture(scope="module")
def models(soft_gguf):
    from funasr_cpp import Model
    with Model(*soft_gguf, n_parallel=1, **EXACT) as one, Model(*soft_gguf, n_parallel=4, **EXACT) as four:
        yield one, four


def _same_segments(a, b):
    assert [(s.start, s.end) for s in a.segments] == [(s.start, s.end) for s in b.segments]
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments] and a.text == b.text


def test_multi_segment_transcription_is_batched(models, speech_wavs):
    one, four = models
    opts = dict(vad=None, max_segment_seconds=1.5, max_new_tokens=N_TOKENS)
    seen = []
    batched = four.transcribe(speech_wavs["speech-zh"], progress=lambda d, t: seen.append((d, t)), **opts)
    _same_segments(batched, one.transcribe(speech_wavs["speech-zh"], **opts))
    assert len(batched.segments) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == seen[-1][1]


def test_transcribe_batch_with_a_bad_input(models, speech_wavs, tmp_path):
    one, four = models
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    items = [speech_wavs["speech-zh"], bad, speech_wavs["speech-en"], speech_wavs["speech-zh"]]
    res = four.transcribe_batch(items, max_new_tokens=N_TOKENS, return_exceptions=True)
    assert isinstance(res[1], ValueError) and "bad.wav" in str(res[1])
    for k in (0, 2, 3):
        _same_segments(res[k], one.transcribe(items[k], max_new_tokens=N_TOKENS))
    with pytest.raises(ValueError, match="bad.wav"):
        four.transcribe_batch(items, max_new_tokens=N_TOKENS)


def test_concurrent_model_transcribe(models, speech_wavs):
    one, four = models
    wavs = [speech_wavs["speech-zh"], speech_wavs["speech-en"]] * 3
    out = [None] * len(wavs)

    def work(k):
        out[k] = four.transcribe(wavs[k], max_new_tokens=N_TOKENS)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(wavs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, r in zip(wavs, out):
        _same_segments(r, one.transcribe(w, max_new_tokens=N_TOKENS))


def test_draft_source(models, speech_wavs):
    from funasr_cpp.draft import FixedDrafts
    one, four = models
    ref = one.transcribe(speech_wavs["speech-en"], max_new_tokens=N_TOKENS)
    for drafts in ([ref.segments[0].tokens], [ref.text], ["something else entirely"], []):
        res = four.transcribe(speech_wavs["speech-en"], max_new_tokens=N_TOKENS, draft=FixedDrafts(drafts))
        _same_segments(res, ref)
        if drafts == [ref.segments[0].tokens]:
            assert res.timings.n_accepted_tokens == res.timings.n_draft_tokens >= len(ref.segments[0].tokens) - 3
    with pytest.raises(TypeError, match="draft source"):
        four.transcribe(speech_wavs["speech-en"], draft=lambda seg: 3.5)
    with pytest.raises(ValueError, match="draft_max"):
        four.transcribe(speech_wavs["speech-en"], draft_max=65)


def test_abandoned_transcribe_iter_leaves_nothing_running(models, speech_wavs):
    one, four = models
    items = [speech_wavs["speech-zh"], speech_wavs["speech-en"]] * 6
    it = four.transcribe_iter(items, max_new_tokens=N_TOKENS)
    first = next(it)
    it.close()  # the queued and running segments of the other inputs are cancelled
    _same_segments(first, one.transcribe(items[0], max_new_tokens=N_TOKENS))
    _same_segments(four.transcribe(items[1], max_new_tokens=N_TOKENS), one.transcribe(items[1], max_new_tokens=N_TOKENS))
