"""The LLM half of Fun-ASR-Nano through libllama: tokenizer, logits, quantization.

Thin wrappers over ``funasr_cpp._core``; the work runs natively with the GIL
released, and failures are Python exceptions that name the file.
"""
from __future__ import annotations

import os
from typing import Any

from . import _core
from .options import LoadOptions

#: LlamaModel's KV cache cells when not given: it evaluates whole token sequences from position 0.
N_CTX = 2048
# the LoadOptions a single LLM context takes (no encoder, no batch of segments)
_LOAD_KEYS = ("n_threads", "device", "n_gpu_layers", "n_batch", "flash_attn", "kv_type")

#: Names accepted by :func:`quantize` (``q4_k`` and ``q5_k`` are the ``_m`` variants).
QUANT_TYPES: tuple = _core.QUANT_TYPES


class LlamaModel(_core.LlamaModel):
    """A GGUF LLM loaded with libllama: model weights plus one inference context.

    ``LlamaModel(path, *, n_ctx=2048, n_threads, device, n_gpu_layers, n_batch, flash_attn, kv_type)``

    - ``n_ctx``: the KV cache (default :data:`N_CTX`); llama.cpp pads it up to a multiple of 256
      and caps ``n_batch`` at it: read the properties for the values in use.
    - the others as :class:`funasr_cpp.options.LoadOptions` has them, with its defaults
      (``n_threads`` None or 0: all cores; ``device="auto"``: the first GPU, else the CPU;
      ``kv_type="f32"`` for bit-level parity work).
    - ``tokenize(text, *, add_special=False, parse_special=True) -> list[int]``
    - ``detokenize(tokens, *, unparse_special=True) -> str``
    - ``token_to_piece(id, *, special=True) -> bytes``
    - ``eval_logits(tokens) -> np.ndarray`` float32 ``[n_tokens, n_vocab]``: the
      tokens decoded as one sequence from position 0 (the KV cache is cleared
      first), logits of every position.
    - ``device``: the device the model runs on (``"cpu"``, ``"vulkan0"``, ...).
    - ``n_vocab``, ``n_embd``, ``n_ctx``, ``n_batch``, ``bos``, ``eos`` (``None``
      when the model has none), ``eog_ids`` and ``is_eog(id)`` (end of
      generation: eos, eot, ``<|im_end|>``, ...).

    A context manager; ``close()`` frees the native memory (idempotent), after
    which every call raises ``RuntimeError``. Calls on one object from several
    threads are serialized. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for one that llama.cpp cannot load, naming the path.
    """

    __slots__ = ()

    def __init__(self, path: str | os.PathLike, *, n_ctx: int = N_CTX, **overrides: Any):
        unknown = sorted(set(overrides) - set(_LOAD_KEYS))
        if unknown:
            raise TypeError(f"unknown LlamaModel option(s) {', '.join(map(repr, unknown))}; "
                            f"valid: n_ctx, {', '.join(_LOAD_KEYS)}")
        load = LoadOptions.build(**overrides).engine_kwargs()
        super().__init__(path, n_ctx=n_ctx, **{k: load[k] for k in _LOAD_KEYS})


def quantize(src: str | os.PathLike, dst: str | os.PathLike, type: str, n_threads: int | None = None) -> None:
    """Quantize the GGUF LLM ``src`` into ``dst`` with llama.cpp (``type``: one of :data:`QUANT_TYPES`).

    Tensors whose row size does not fit the type's block size (k-quants need
    multiples of 256) fall back to a compatible type, as in ``llama-quantize``.
    ``dst`` is written through a temporary file in its directory and replaced
    only on success, so a failure never leaves a partial model. ``n_threads``:
    ``None`` or 0 for all cores.

    Raises ``ValueError`` for an unknown type, ``dst`` equal to ``src``, or a
    source llama.cpp cannot quantize (e.g. an already quantized one);
    ``FileNotFoundError`` for a missing ``src`` or destination directory;
    ``PermissionError`` for a destination directory that cannot be written.
    """
    _core.quantize(os.fspath(src), os.fspath(dst), type, n_threads=n_threads or 0)


__all__ = ["LlamaModel", "N_CTX", "QUANT_TYPES", "quantize"]
