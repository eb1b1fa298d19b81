"""One audio file -> its vector, duration and time-stamped segments (speech and sound).

The file streams through in windows of ~30 s (bounded memory, whatever its length). In each
window Whisper finds speech (each spoken segment becomes a text vector in the model's text space,
kept with its words and times), and the model's sound tower, when it has one, embeds the window's
sound. The item's vector is the duration-weighted mean of its speech vectors when anything is said,
else of its sound vectors, so `"meeting about the budget"` finds the recording where that is said,
and a sound query or a trained sound head finds recordings that sound alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from mmsearch.audio import Source, windows
from mmsearch.encoders import AUDIO, TEXT, Encoder, l2_normalize
from mmsearch.errors import MediaError, ModelError

T = TypeVar("T", bound=Any)
SPEECH = "speech"
SOUND = "sound"
# Share of the sound vector in the item vector of a recording with speech. Zero: builtin's zero-shot
# sound vectors are at chance on real sounds (bench/bench_audio.py), and mixing them in pulled
# spoken recordings away from their topic (audio->text got worse). Sound segments are still kept.
SOUND_WEIGHT_WITH_SPEECH = 0.0
SILENCE_PEAK = 1e-4  # windows quieter than this (digital silence) get no sound vector


@dataclass
class Segment:
    start: float
    end: float
    kind: str  # "speech" | "sound"
    vector: np.ndarray
    text: str | None = None


@dataclass
class AudioAnalysis:
    vector: np.ndarray
    duration: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        return " ".join(s.text for s in self.segments if s.kind == SPEECH and s.text)


def has_sound_tower(encoder: Encoder) -> bool:
    return AUDIO in encoder.modalities and hasattr(encoder, "encode_audio")


def can_index_audio(encoder: Encoder) -> bool:
    """Audio is searchable with a sound tower, or through speech with a text tower."""
    return has_sound_tower(encoder) or TEXT in encoder.modalities


def _pool(segments: list[Segment], kind: str) -> np.ndarray | None:
    """Duration-weighted mean vector of the segments of one kind; None when there are none."""
    chosen = [s for s in segments if s.kind == kind]
    if not chosen:
        return None
    weights = np.array([max(s.end - s.start, 0.1) for s in chosen], dtype=np.float32)
    return (weights[:, None] * np.stack([s.vector for s in chosen])).sum(axis=0) / weights.sum()


def analyze(
    source: Source,
    encoder: Encoder,
    transcribe: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    max_seconds: float | None = None,
) -> AudioAnalysis:
    """Embed one audio file (or its first ``max_seconds``: a query clip one hour long must not hold the engine).

    Raises:
        MediaError: unreadable, empty, or nothing the model can embed (no speech and no sound tower).
    """
    from mmsearch.speech import SAMPLE_RATE as SPEECH_RATE
    from mmsearch.speech import get_transcriber

    sound = has_sound_tower(encoder)
    sound_problem = "" if sound else f"model {encoder.name} has no sound tower"
    rate = int(getattr(encoder, "audio_sample_rate", SPEECH_RATE)) if sound else SPEECH_RATE
    speech = transcribe and TEXT in encoder.modalities
    transcriber = get_transcriber() if speech else None
    segments: list[Segment] = []
    total = 0
    for start, samples in windows(source, rate):
        if should_stop():
            raise KeyboardInterrupt
        if max_seconds is not None:
            if start >= max_seconds:
                break
            samples = samples[: int((max_seconds - start) * rate)]
        total += samples.size
        end = start + samples.size / rate
        if transcriber is not None:
            clip = samples
            if rate != SPEECH_RATE:
                import soxr

                clip = soxr.resample(samples, rate, SPEECH_RATE)
            spoken = transcriber.transcribe(clip, offset=start)
            if spoken:
                vecs = encoder.encode_text([s.text for s in spoken])
                segments += [Segment(s.start, s.end, SPEECH, v, s.text) for s, v in zip(spoken, vecs, strict=True)]
        if sound and float(np.abs(samples).max(initial=0.0)) > SILENCE_PEAK:
            try:
                vec = encoder.encode_audio([samples])[0]  # type: ignore[attr-defined]
            except ModelError as e:
                sound, sound_problem = False, str(e)
            else:
                segments.append(Segment(start, end, SOUND, vec))
    if total == 0:
        raise MediaError("no audio samples")
    duration = total / rate
    speech_mean = _pool(segments, SPEECH)
    sound_mean = _pool(segments, SOUND)
    if speech_mean is None and sound_mean is None:
        if not sound_problem:
            raise MediaError("silent: no speech and no sound")
        raise MediaError(f"no speech found, and {sound_problem}")
    if speech_mean is None:
        vector = sound_mean
    elif sound_mean is None or SOUND_WEIGHT_WITH_SPEECH == 0:
        vector = speech_mean
    else:
        vector = speech_mean + SOUND_WEIGHT_WITH_SPEECH * sound_mean
    segments.sort(key=lambda s: (s.start, s.kind))
    return AudioAnalysis(l2_normalize(np.asarray(vector)[None])[0], duration, segments)


def best_segment(segments: Sequence[T], query: np.ndarray) -> tuple[T, float] | None:
    """The segment (anything with a ``vector``: a Segment, a stored SegmentRecord) most similar to a
    query vector, the first one on ties: where a hit matches."""
    if not segments:
        return None
    sims = np.stack([s.vector for s in segments]) @ np.asarray(query, dtype=np.float32).reshape(-1)
    i = int(np.argmax(sims))
    return segments[i], float(sims[i])
