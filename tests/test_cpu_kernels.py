"""The CPU backend's extra-buffer kernels (AMX where the CPU and the build have it), which the LLM's
and the projector's matrix weights use, against numpy and against the plain CPU kernels, on the
shapes where ggml's AMX kernel has edge cases: one K block (K = 32), row counts around its 16- and
32-row tiles, output widths of one and several 32-column blocks."""
from __future__ import annotations

import numpy as np
import pytest

from funasr_cpp import _testing

EXTRA = _testing.cpu_extra_buffer_types()
needs_amx = pytest.mark.skipif(
    "AMX" not in EXTRA, reason="no AMX buffer type here (`funasr-cpp info` shows AMX_INT8=1 where the CPU has AMX "
                               "and the build's probe passed)")


def q8_0(v: np.ndarray) -> np.ndarray:
    """ggml's q8_0 round trip along the last axis: blocks of 32, scale max|v| / 127 stored as f16."""
    b = v.astype(np.float32).reshape(*v.shape[:-1], -1, 32)
    d = np.abs(b).max(-1, keepdims=True) / 127
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    q = np.clip(np.rint(b * inv), -127, 127)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(v.shape)


def q4_0(v: np.ndarray) -> np.ndarray:
    """ggml's q4_0 round trip: blocks of 32, scale = (the value of largest magnitude) / -8 as f16."""
    b = v.astype(np.float32).reshape(*v.shape[:-1], -1, 32)
    idx = np.abs(b).argmax(-1)[..., None]
    d = np.take_along_axis(b, idx, -1) / -8
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.floor(b * inv + 8.5), 0, 15) - 8
    return (q * d.astype(np.float16).astype(np.float32)).reshape(v.shape)


ROUND_TRIP = {"q8_0": q8_0, "q4_0": q4_0}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


SHAPES = [(k, n, m) for k in (32, 64, 512) for n in (32, 96) for m in (1, 2, 15, 16, 17, 31, 32, 33, 50, 64, 101)]
SHAPES += [(1024, 512, m) for m in (1, 8, 33)]


@needs_amx
@pytest.mark.parametrize("wtype", ["q8_0", "q4_0"])
def test_amx_products_match_numpy_and_the_plain_kernels(wtype):
    rng = np.random.default_rng(7)
    worst_np = worst_plain = 0.0
    for k, n, m in SHAPES:
        w = rng.normal(size=(n, k)).astype(np.float32)
        x = rng.normal(size=(m, k)).astype(np.float32)
        # both kernels quantize the activations to q8_0 first (ggml's vec_dot_type for these types)
        want = q8_0(x).astype(np.float64) @ ROUND_TRIP[wtype](w).astype(np.float64).T
        amx = _testing.cpu_mul_mat(w, x, type=wtype, buffer="AMX")
        plain = _testing.cpu_mul_mat(w, x, type=wtype, buffer="plain")
        assert amx.shape == (m, n)
        worst_np = max(worst_np, rel(amx, want))
        worst_plain = max(worst_plain, rel(amx, plain))
        assert rel(amx, want) < 1e-3, (wtype, k, n, m, rel(amx, want))
        assert rel(amx, plain) < 1e-4, (wtype, k, n, m, rel(amx, plain))
    # integer dot products scaled per block: what is left is float rounding (and rare q8_0 rounding ties)
    assert worst_plain < 1e-5, worst_plain


@needs_amx
def test_a_single_k_block_overwrites_the_output():
    """The KB == 1 case of ggml's 32-row AMX tile (third_party/patches/0008): the product must not add
    to what the output buffer held. Run twice so the second run reuses a dirty buffer."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(128, 32)).astype(np.float32)
    x = rng.normal(size=(64, 32)).astype(np.float32)
    want = q8_0(x).astype(np.float64) @ q8_0(w).astype(np.float64).T
    for _ in range(2):
        assert rel(_testing.cpu_mul_mat(w, x, type="q8_0", buffer="AMX"), want) < 1e-5


def test_unknown_buffer_or_type_is_an_error():
    w = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match="no buffer type NOPE"):
        _testing.cpu_mul_mat(w, w, buffer="NOPE")
    with pytest.raises(ValueError, match="unknown ggml type"):
        _testing.cpu_mul_mat(w, w, type="q9_9")
