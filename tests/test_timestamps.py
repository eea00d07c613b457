"""funasr_cpp.timestamps: the tokenizer and the alignment. Oracle: upstream's own ``forced_align``
(funasr/models/fun_asr_nano/tools/utils.py) with torchaudio's ``functional.forced_align``
supplied by the reference Viterbi of fixtures/ctc_reference.py (torchaudio cannot be installed
beside torch 2.13 here), written independently of the code under test."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from fixtures.ctc_reference import fake_torchaudio
from funasr_cpp.timestamps import align, ctc_greedy, viterbi

BLANK = 9


@pytest.fixture()
def upstream_forced_align():
    with fake_torchaudio():
        from funasr.models.fun_asr_nano.tools.utils import forced_align
        yield forced_align


def _log_probs(rng, T, C=BLANK + 1, sharp=3.0):
    x = rng.standard_normal((T, C)).astype(np.float32) * sharp
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


def _ours(lp, targets):
    return [{"token": s.token, "start_time": s.start, "end_time": s.end, "score": s.score}
            for s in align(lp, targets, BLANK)]


def test_random_alignments_equal_upstream(upstream_forced_align):
    rng = np.random.default_rng(0)
    n_empty = 0
    for k in range(300):
        T = int(rng.integers(1, 40))
        L = int(rng.integers(0, 12))
        targets = [int(v) for v in rng.integers(0, BLANK, L)]
        if k % 3 == 0 and L > 1:  # repeated tokens need a blank between them
            targets[1] = targets[0]
        lp = _log_probs(rng, T, sharp=float(rng.choice([0.0, 0.5, 3.0])))  # 0: every path ties
        up = upstream_forced_align(torch.from_numpy(lp), torch.tensor(targets, dtype=torch.int64), BLANK)
        ours = _ours(lp, targets)
        n_empty += not up
        assert [(d["token"], d["start_time"], d["end_time"]) for d in ours] == \
            [(d["token"], d["start_time"], d["end_time"]) for d in up], (T, targets)
        assert all(abs(a["score"] - b["score"]) <= 1e-3 for a, b in zip(ours, up))
    assert 20 < n_empty < 200  # impossible alignments were exercised, and possible ones


def test_long_alignment_equals_upstream(upstream_forced_align):
    """Longer than the random ones: 300 frames, 100 tokens (201 states, past int8 state indices)."""
    rng = np.random.default_rng(1)
    targets = [int(v) for v in rng.integers(0, BLANK, 100)]
    lp = _log_probs(rng, 300, sharp=2.0)
    up = upstream_forced_align(torch.from_numpy(lp), torch.tensor(targets, dtype=torch.int64), BLANK)
    ours = _ours(lp, targets)
    assert len(up) == 100
    assert [(d["token"], d["start_time"], d["end_time"]) for d in ours] == \
        [(d["token"], d["start_time"], d["end_time"]) for d in up]


def test_constructed_paths():
    eps = np.float32(-30.0)

    def onehot(labels, C=BLANK + 1):
        lp = np.full((len(labels), C), eps, np.float32)
        lp[np.arange(len(labels)), labels] = 0.0
        return lp

    # a repeated token needs the blank between its two occurrences; a token over three frames
    lp = onehot([1, 1, 1, BLANK, 1, 2])
    assert [(s.token, s.start, s.end) for s in align(lp, [1, 1, 2], BLANK)] == [(1, 0, 3), (1, 4, 5), (2, 5, 6)]
    assert all(s.score == 1.0 for s in align(lp, [1, 1, 2], BLANK))
    # exactly as many frames as tokens + repeats: no room for leading or trailing blanks
    lp = onehot([BLANK, 3, BLANK])
    assert [(s.token, s.start, s.end) for s in align(lp, [3, 3], BLANK)] == [(3, 0, 1), (3, 2, 3)]
    # more tokens than frames, a blank or an out-of-range id among them, no tokens: no alignment
    assert align(onehot([1, 2]), [1, 2, 3], BLANK) == []
    assert align(onehot([1, 1]), [1, 1], BLANK) == []  # 2 frames < 2 tokens + 1 repeat
    assert align(onehot([1, 2, 3]), [1, BLANK], BLANK) == []
    assert align(onehot([1, 2, 3]), [BLANK + 1], BLANK) == []
    assert align(onehot([1, 2, 3]), [], BLANK) == []
    assert viterbi(onehot([1]), [1], BLANK).tolist() == [1]


def test_ctc_greedy():
    lp = np.full((7, BLANK + 1), -5.0, np.float32)
    for t, k in enumerate([BLANK, 4, 4, BLANK, 4, 2, 2]):
        lp[t, k] = 0.0
    assert ctc_greedy(lp, BLANK) == [4, 4, 2]
    lp[:] = 0.0  # all tied: the first maximum, id 0, every frame
    assert ctc_greedy(lp, BLANK) == [0]


# ------------------------------------------------------------------------------------- tokenizer
TEXTS = ["今天天气很好，我们去公园散步吧。", "The quick brown fox jumps over the lazy dog.", "",
         "  spaces\tand\nnewlines  ", "数字 12345 and 3.14", "emoji 🙂 and ü ö ß", "<|nospeech|><|zh|> literal specials",
         "mixed中文English混合", "'s 're 've 'll 'd"]


@pytest.fixture(scope="module")
def tokenizers(ctc_release, ctc_gguf):
    from funasr.tokenizer.whisper_tokenizer import SenseVoiceTokenizer

    from funasr_cpp.timestamps import CtcTokenizer
    folder, mmproj = ctc_release, ctc_gguf[1]
    up = SenseVoiceTokenizer(vocab_path=str(folder / "multilingual.tiktoken"), is_multilingual=True,
                             num_languages=8749)
    return up, CtcTokenizer.from_file(folder / "multilingual.tiktoken"), CtcTokenizer.from_mmproj(mmproj)


def test_ctc_tokenizer_equals_upstream(tokenizers):
    up, from_file, from_mmproj = tokenizers
    for ours in (from_file, from_mmproj):
        assert ours.n_vocab == up.encoding.n_vocab and ours.timestamp_begin == up.timestamp_begin
        for text in TEXTS:
            ids = up.encode(text)
            assert ours.encode(text) == ids, text
            assert ours.decode(ids) == up.decode(ids) == text
        # every special token by id, one id at a time (cut UTF-8 included), and timestamps dropped
        ids = list(range(0, up.encoding.n_vocab, 7)) + list(range(up.timestamp_begin - 80, up.encoding.n_vocab))
        assert [ours.decode([i]) for i in ids] == [up.decode([i]) for i in ids]
        assert ours.decode(ids) == up.decode(ids)


def test_ctc_tokenizer_errors(tmp_path, tiny_qwen3):
    from funasr_cpp.timestamps import CtcTokenizer
    with pytest.raises(ValueError, match="no CTC tokenizer"):
        CtcTokenizer.from_mmproj(tiny_qwen3[0])
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("YQ== 0\nYg== 2\n")
    with pytest.raises(ValueError, match="ranks"):
        CtcTokenizer.from_file(bad)


def test_words_from_spans_as_upstream_reports_them(tokenizers, upstream_forced_align):
    from funasr_cpp.timestamps import words_from_spans
    up, ours, _ = tokenizers
    rng = np.random.default_rng(5)
    ids = up.encode("今天天气 the quick fox")
    lp = _log_probs(rng, 3 * len(ids) + 4, C=up.encoding.n_vocab, sharp=2.0)
    blank = up.encoding.n_vocab - 1
    expected = upstream_forced_align(torch.from_numpy(lp), torch.tensor(ids), blank)
    for t in expected:  # what upstream's inference_llm then does to each timestamp
        t["token"] = up.decode([t["token"]])
        t["start_time"] = t["start_time"] * 6 * 10 / 1000
        t["end_time"] = t["end_time"] * 6 * 10 / 1000
    words = words_from_spans(align(lp, ids, blank), ours, offset=0.0)
    assert len(expected) == len(ids)
    assert [(w.text, w.start, w.end) for w in words] == [(t["token"], t["start_time"], t["end_time"]) for t in expected]
    assert all(abs(w.probability - t["score"]) <= 1e-3 for w, t in zip(words, expected))
    moved = words_from_spans(align(lp, ids, blank), ours, offset=30.0)
    assert [w.start - 30.0 for w in moved] == pytest.approx([w.start for w in words])


def test_merge_words():
    from funasr_cpp.timestamps import Word, merge_words
    pieces = [Word(0.0, 0.1, "今", 0.9), Word(0.1, 0.2, "天", 0.7), Word(0.2, 0.3, " qu", 0.5),
              Word(0.3, 0.4, "ick", 0.7), Word(0.4, 0.5, " fox", 0.8), Word(0.5, 0.6, "好", 1.0), Word(0.6, 0.6, "", 0.1)]
    merged = merge_words(pieces)
    assert [(w.text, w.start, w.end) for w in merged] == [("今", 0.0, 0.1), ("天", 0.1, 0.2), (" quick", 0.2, 0.4),
                                                         (" fox", 0.4, 0.5), ("好", 0.5, 0.6)]
    assert merged[2].probability == pytest.approx(0.6)
    assert merge_words([]) == []
