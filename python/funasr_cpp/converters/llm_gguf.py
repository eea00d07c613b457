"""The Qwen3 LLM of a release as a standard llama.cpp `qwen3` GGUF.

Weights come from model.pt (llm.*), hyper-parameters from
Qwen3-0.6B/config.json, the tokenizer from tokenizer.json and
tokenizer_config.json. The chat template reproduces Fun-ASR's prompt: ChatML
with the fixed system turn "You are a helpful assistant.".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import gguf

from ..prompt import asr_prompt_block
from .checkpoint import Release
from .errors import ReleaseError
from .gguf_out import FILE_TYPES, Tensor, weight_type, write_gguf

# Qwen2's pre-tokenizer regex: llama.cpp's "qwen2" pre-tokenizer implements exactly this split.
QWEN2_PRETOKENIZER_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                            r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SYSTEM_PROMPT = "You are a helpful assistant."
# Fun-ASR's ChatML with its fixed system turn (a caller's system message replaces it); first, the ASR
# prompt block (a Jinja comment) that the patched llama-server uses for /v1/audio/transcriptions
# (funasr_cpp.prompt.asr_prompt_block)
CHAT_TEMPLATE = (
    asr_prompt_block() +
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + SYSTEM_PROMPT + "' -%}{%- set rest = messages -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
    "{%- for message in rest -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# model.pt key (after "llm.") -> llama.cpp tensor name, per layer
_LAYER_MAP = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def _token_content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class Vocab:
    """tokens/types/merges/special ids from the HF tokenizer files."""

    def __init__(self, release: Release):
        tok_dir = release.tokenizer_dir
        tj = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
        tc = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        model = tj.get("model") or {}
        if model.get("type") != "BPE":
            raise ReleaseError(f"{tok_dir / 'tokenizer.json'}: tokenizer model {model.get('type')!r}, expected BPE")
        self._check_pretokenizer(tj, tok_dir / "tokenizer.json")

        id_to_tok: dict[int, str] = {i: t for t, i in model["vocab"].items()}
        special: set[int] = set()
        for added in tj.get("added_tokens", []):
            id_to_tok[added["id"]] = added["content"]
            if added.get("special"):
                special.add(added["id"])
        added_ids = {a["id"] for a in tj.get("added_tokens", [])}
        n_vocab = release.llm_config["vocab_size"]
        if max(id_to_tok) >= n_vocab:
            raise ReleaseError(f"{tok_dir}: tokenizer has id {max(id_to_tok)} but config.json vocab_size is {n_vocab}")
        self.tokens, self.types = [], []
        for i in range(n_vocab):
            if i not in id_to_tok:
                self.tokens.append(f"[PAD{i}]")
                self.types.append(gguf.TokenType.UNUSED)
            else:
                self.tokens.append(id_to_tok[i])
                self.types.append(gguf.TokenType.CONTROL if i in special else
                                  gguf.TokenType.USER_DEFINED if i in added_ids else gguf.TokenType.NORMAL)
        self.merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

        by_content = {t: i for i, t in id_to_tok.items()}

        def special_id(name: str) -> int | None:
            content = _token_content(tc.get(name))
            if content is None:
                return None
            if content not in by_content:
                raise ReleaseError(f"{tok_dir / 'tokenizer_config.json'}: {name} {content!r} is not in the vocabulary")
            return by_content[content]

        self.eos = special_id("eos_token")
        if self.eos is None:
            raise ReleaseError(f"{tok_dir / 'tokenizer_config.json'}: no eos_token")
        self.pad = special_id("pad_token")
        self.bos = release.llm_config.get("bos_token_id")
        if self.bos is not None and self.bos not in id_to_tok:
            raise ReleaseError(f"{tok_dir}: the LLM config's bos_token_id {self.bos} is not in the vocabulary")
        self.add_bos = bool(tc.get("add_bos_token", False))

    @staticmethod
    def _check_pretokenizer(tj: dict, where: Path) -> None:
        pre = tj.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
        regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
        if regexes != [QWEN2_PRETOKENIZER_REGEX] or not any(s.get("type") == "ByteLevel" for s in steps):
            raise ReleaseError(f"{where}: pre-tokenizer is not Qwen2's byte-level split; "
                               "llama.cpp's 'qwen2' tokenizer would split text differently")

    def add_to(self, w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        w.add_token_merges(self.merges)
        w.add_eos_token_id(self.eos)
        if self.pad is not None:
            w.add_pad_token_id(self.pad)
        if self.bos is not None:
            w.add_bos_token_id(self.bos)
        w.add_add_bos_token(self.add_bos)
        w.add_chat_template(CHAT_TEMPLATE)


def _tensors(release: Release, type_name: str) -> list[Tensor]:
    cfg = release.llm_config
    out: list[Tensor] = []

    def add(name: str, key: str) -> None:
        shape = tuple(release.tensors[key].shape)
        out.append(Tensor(name, shape, weight_type(type_name, shape), lambda k=key: release.numpy(k)))

    add("token_embd.weight", "llm.model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        for src, dst in _LAYER_MAP.items():
            add(f"blk.{i}.{dst}", f"llm.model.layers.{i}.{src}")
    add("output_norm.weight", "llm.model.norm.weight")
    if not _tied(release):
        add("output.weight", "llm.lm_head.weight")  # an untied head is kept as its own tensor
    return out


def _tied(release: Release) -> bool:
    """lm_head is stored but, in the release, equal to embed_tokens (Qwen3 ties them)."""
    emb, head = release.tensors["llm.model.embed_tokens.weight"], release.tensors["llm.lm_head.weight"]
    step = 4096  # row slices: both are large and memory-mapped
    return all(np.array_equal(emb.to_numpy(rows=slice(i, i + step)), head.to_numpy(rows=slice(i, i + step)))
               for i in range(0, emb.shape[0], step))


def write_llm_gguf(release: Release, path: Path, type_name: str = "f16", progress: bool = True) -> Path:
    cfg = release.llm_config
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    vocab = Vocab(release)
    tensors = _tensors(release, type_name)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_name(release.path.name)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_context_length(cfg.get("max_position_embeddings", 40960))
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_freq_base(float(cfg.get("rope_theta", 1_000_000.0)))
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
        w.add_file_type(FILE_TYPES[type_name])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.add_to(w)

    return write_gguf(path, "qwen3", metadata, tensors, label="llm", progress=progress)
