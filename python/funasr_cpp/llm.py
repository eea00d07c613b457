"""The LLM half of Fun-ASR-Nano through libllama: tokenizer, logits, quantization.

Thin wrappers over ``funasr_cpp._core``; the work runs natively with the GIL
released, and failures are Python exceptions that name the file.
"""
from __future__ import annotations

import os

from . import _core

#: Names accepted by :func:`quantize` (``q4_k`` and ``q5_k`` are the ``_m`` variants).
QUANT_TYPES: tuple = _core.QUANT_TYPES


class LlamaModel(_core.LlamaModel):
    """A GGUF LLM loaded with libllama: model weights plus one inference context.

    ``LlamaModel(path, *, n_ctx=2048, n_threads=0, n_gpu_layers=-1, n_batch=512, flash_attn="auto",
    kv_type="f16")``

    - ``n_threads=0`` uses all cores; ``n_gpu_layers=-1`` offloads every layer
      (when the build has a GPU backend); ``flash_attn`` is ``"auto"``, ``"on"``
      or ``"off"``; ``kv_type`` is the KV cache type (``"f32"`` for bit-level
      parity work, ``"f16"`` default, ``"bf16"``, ``"q8_0"``). llama.cpp pads ``n_ctx`` up to a multiple of 256 and caps
      ``n_batch`` at ``n_ctx``: read the properties for the values in use.
    - ``tokenize(text, *, add_special=False, parse_special=True) -> list[int]``
    - ``detokenize(tokens, *, unparse_special=True) -> str``
    - ``token_to_piece(id, *, special=True) -> bytes``
    - ``eval_logits(tokens) -> np.ndarray`` float32 ``[n_tokens, n_vocab]``: the
      tokens decoded as one sequence from position 0 (the KV cache is cleared
      first), logits of every position.
    - ``n_vocab``, ``n_embd``, ``n_ctx``, ``n_batch``, ``bos``, ``eos`` (``None``
      when the model has none), ``eog_ids`` and ``is_eog(id)`` (end of
      generation: eos, eot, ``<|im_end|>``, ...).

    A context manager; ``close()`` frees the native memory (idempotent), after
    which every call raises ``RuntimeError``. Calls on one object from several
    threads are serialized. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for one that llama.cpp cannot load, naming the path.
    """

    __slots__ = ()


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


__all__ = ["LlamaModel", "QUANT_TYPES", "quantize"]
