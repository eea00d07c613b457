"""Fun-ASR-Nano prompt text and output post-processing, byte for byte as upstream funasr.

``build_prompt`` gives the full ChatML prompt with the media marker ``<__media__>`` where the
audio rows go (funasr's ``<|startofspeech|>…<|endofspeech|>`` span); libmtmd tokenizes the text
before and after the marker separately, as funasr does.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

MEDIA_MARKER = "<__media__>"
SYSTEM_PROMPT = "You are a helpful assistant."

_HOTWORD_PREAMBLE = ("请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。"
                     "\n\n\n**上下文信息：**\n\n\n")

# Language names as upstream inserts them (Fun-ASR-Nano: 中文, 英文, 日文; Fun-ASR-MLT-Nano: all 31).
LANGUAGES: dict[str, str] = {
    "zh": "中文", "en": "英文", "yue": "粤语", "ja": "日文", "ko": "韩文", "vi": "越南语", "id": "印尼语",
    "th": "泰语", "ms": "马来语", "fil": "菲律宾语", "ar": "阿拉伯语", "hi": "印地语", "bg": "保加利亚语",
    "hr": "克罗地亚语", "cs": "捷克语", "da": "丹麦语", "nl": "荷兰语", "et": "爱沙尼亚语", "fi": "芬兰语",
    "el": "希腊语", "hu": "匈牙利语", "ga": "爱尔兰语", "lv": "拉脱维亚语", "lt": "立陶宛语", "mt": "马耳他语",
    "pl": "波兰语", "pt": "葡萄牙语", "ro": "罗马尼亚语", "sk": "斯洛伐克语", "sl": "斯洛文尼亚语", "sv": "瑞典语",
}
_ALIASES = {"tl": "fil"}
LANGUAGE_NAMES: tuple[str, ...] = tuple(LANGUAGES.values())


def normalize_language(language: Optional[str]) -> Optional[str]:
    """None, an upstream language name (中文, 英文, ...) or an ISO code (zh, en, ...) -> the upstream name."""
    if language is None:
        return None
    if not isinstance(language, str):
        raise TypeError(f"language must be a str or None, got {type(language).__name__}")
    if language in LANGUAGE_NAMES:
        return language
    code = language.strip().lower().replace("_", "-")
    code = _ALIASES.get(code, code)
    if code in LANGUAGES:
        return LANGUAGES[code]
    codes = sorted(set(LANGUAGES) | set(_ALIASES))
    raise ValueError(f"unknown language {language!r}; valid values: None, the names "
                     f"{', '.join(LANGUAGE_NAMES)} or the codes {', '.join(codes)}")


def check_hotwords(hotwords) -> list[str]:
    """None or a list/tuple of str -> a list (TypeError naming what is wrong)."""
    if hotwords is None:
        return []
    if not isinstance(hotwords, (list, tuple)):
        raise TypeError(f"hotwords must be a list or tuple of str, got {type(hotwords).__name__}"
                        + (" (wrap a single hotword in a list)" if isinstance(hotwords, str) else ""))
    for i, w in enumerate(hotwords):
        if not isinstance(w, str):
            raise TypeError(f"hotwords[{i}] must be a str, got {type(w).__name__}")
    return list(hotwords)


_TRANSCRIBE = "语音转写"
_TRANSCRIBE_INTO = "语音转写成{language}"


def asr_prompt_block() -> str:
    """The instruction as a server that knows only a language builds it (llama-server's
    /v1/audio/transcriptions, patched: csrc/model/funasr_chat.cpp): a Jinja comment the converter puts
    into the LLM GGUF's chat template. ITN on, no hotwords: upstream's defaults."""
    lines = ["{#- asr-prompt", "user=" + _TRANSCRIBE + "：", "user_language=" + _TRANSCRIBE_INTO + "："]
    lines += [f"language={code}={name}" for code, name in LANGUAGES.items()]
    lines += [f"language={alias}={LANGUAGES[code]}" for alias, code in _ALIASES.items()]
    return "\n".join(lines) + "\n-#}"


def instruction(language: Optional[str] = None, itn: bool = True,
                hotwords: Optional[Sequence[str]] = None) -> str:
    """The user instruction of upstream ``FunASRNano.get_prompt(hotwords, language, itn)``."""
    words = check_hotwords(hotwords)
    name = normalize_language(language)
    p = _HOTWORD_PREAMBLE + "热词列表：[" + ", ".join(words) + "]\n" if words else ""
    p += _TRANSCRIBE if name is None else _TRANSCRIBE_INTO.format(language=name)
    if not itn:
        p += "，不进行文本规整"
    return p + "："


def build_prompt(language: Optional[str] = None, itn: bool = True,
                 hotwords: Optional[Sequence[str]] = None) -> str:
    """The full ChatML prompt with one ``<__media__>`` marker where the audio goes."""
    return ("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n"
            + instruction(language, itn, hotwords) + MEDIA_MARKER + "<|im_end|>\n<|im_start|>assistant\n")


def postprocess(text: str) -> str:
    """Upstream's text clean-up: ``/sil`` -> space, whitespace runs -> one space (no strip)."""
    return re.sub(r"\s+", " ", text.replace("/sil", " "))


__all__ = ["MEDIA_MARKER", "SYSTEM_PROMPT", "LANGUAGES", "LANGUAGE_NAMES", "build_prompt", "check_hotwords",
           "instruction", "normalize_language", "postprocess"]
