"""Write a tiny random-weight qwen3 GGUF with the gguf package (test helper).

Byte-level BPE vocabulary: the 256 GPT-2 byte symbols, a few merges and the
Qwen special tokens, so llama.cpp's gpt2/qwen2 tokenizer loads it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable unicode mapping, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tiny_qwen3(path: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                     n_head_kv: int = 2, head_dim: int = 32, n_ff: int = 128,
                     n_ctx: int = 512, seed: int = 0) -> dict:
    import gguf

    tokens = byte_symbols() + ["".join(m) for m in MERGES] + SPECIALS
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_name("tiny-qwen3-test")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)

    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "attn_q.weight", rand(n_head * head_dim, n_embd))
        w.add_tensor(p + "attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_output.weight", rand(n_embd, n_head * head_dim))
        w.add_tensor(p + "attn_q_norm.weight", np.ones(head_dim, np.float32))
        w.add_tensor(p + "attn_k_norm.weight", np.ones(head_dim, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"architecture": "qwen3", "n_embd": n_embd, "n_vocab": n_vocab, "n_layer": n_layer,
            "n_head": n_head, "n_head_kv": n_head_kv, "n_ctx_train": n_ctx}
