"""The answer formats of /v1/audio/transcriptions (no Starlette needed to import them)."""
from __future__ import annotations

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
               "srt": "application/x-subrip; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}


def verbose_json(result, words: bool) -> dict:
    """OpenAI's verbose_json: task, language, duration, text, segments (and words)."""
    out = {"task": "transcribe", "language": result.language or "", "duration": result.duration, "text": result.text,
           "segments": [{"id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens),
                         "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
                        for i, s in enumerate(result.segments)]}
    if words:
        out["words"] = [{"word": w.text, "start": w.start, "end": w.end} for s in result.segments for w in s.words]
    return out
