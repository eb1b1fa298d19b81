"""Audio decoding with bounded memory: soundfile (libsndfile) first, PyAV for what it cannot read.

Files are read block by block, downmixed to mono and resampled on the fly (soxr), then cut into
windows of about ``WINDOW_SECONDS`` at the quietest moment near each boundary, so a two-hour
recording never sits in memory and a cut rarely falls inside a word.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from mmsearch.errors import MediaError
from mmsearch.files import open_regular

# soundfile reads these (libsndfile >= 1.1 has MP3); PyAV, when installed, reads the rest
SOUNDFILE_EXTS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"})
AV_EXTS = frozenset({".m4a", ".aac", ".wma", ".webm"})
AUDIO_EXTS = SOUNDFILE_EXTS | AV_EXTS
WINDOW_SECONDS = 30.0  # Whisper's own window
CUT_SEARCH_SECONDS = 3.0  # look this far back from a window's end for the quietest place to cut
BLOCK_SECONDS = 10.0


def av_available() -> bool:
    """Whether PyAV is installed (looked up, not imported: a walk only needs to know which files it claims)."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def audio_exts() -> frozenset[str]:
    return AUDIO_EXTS if av_available() else SOUNDFILE_EXTS


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    samplerate: int
    channels: int


# A file to read: a path the user named, or a file already opened (and checked) by mmsearch.files.
Source = str | os.PathLike[str] | BinaryIO


@contextlib.contextmanager
def opened(source: Source) -> Iterator[BinaryIO]:
    """``source`` as a binary file at its start: an open file is rewound (and left open), a path is opened
    with :func:`mmsearch.files.open_regular` (never blocking on a pipe) and closed after."""
    if isinstance(source, str | os.PathLike):
        with open_regular(source, follow_symlinks=True) as f:
            yield f
    else:
        source.seek(0)
        yield source


# Signatures of common files that are neither sound nor film, checked before any decoder sees the bytes
# (decoders print to stderr, some "find" an MPEG frame in almost anything, PyAV opens a PNG as a film).
_NOT_MEDIA = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
)


def known_other(head: bytes) -> str | None:
    """What a file's first bytes show it to be when it is a common kind that is not media (None: none)."""
    for magic, what in _NOT_MEDIA:
        if head.startswith(magic) or head.lstrip().lower().startswith(magic.lower()):
            return what
    return None


def sniff(source: Source) -> None:
    """Refuse files whose first bytes show they are something else than audio.

    Raises:
        MediaError: empty, unreadable, or recognisably not audio (an image, a document, text).
    """
    with opened(source) as f:
        try:
            head = f.read(512)
        except OSError as e:
            raise MediaError(f"cannot read: {e.strerror or e}") from e
    if not head:
        raise MediaError("empty file")
    what = known_other(head)
    if what is not None:
        raise MediaError(f"not audio: the file is {what}")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        raise MediaError("not audio: the file is text")


def _sf_error(e: Exception) -> MediaError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return MediaError(f"not a readable audio file ({msg})")


def probe(source: Source) -> AudioInfo:
    """Duration, sample rate and channels, read from the header.

    Raises:
        MediaError: empty, not audio, or a codec neither soundfile nor PyAV can read.
    """
    import soundfile as sf

    sniff(source)
    with opened(source) as f:
        try:
            info = sf.info(f)
            return AudioInfo(float(info.frames) / info.samplerate, int(info.samplerate), int(info.channels))
        except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as e:
            if not av_available():
                raise _sf_error(e) from e
        f.seek(0)
        return _av_probe(f)


def _av_probe(f: BinaryIO) -> AudioInfo:
    import av

    try:
        with av.open(f, mode="r") as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = 0.0
            return AudioInfo(duration, int(stream.rate or 0), int(stream.channels or 0))
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"not a readable audio file ({_av_reason(e)})") from e


def stream(source: Source, samplerate: int, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the file at ``samplerate``; memory stays at a few blocks.

    Raises:
        MediaError: unreadable or broken file (also when it breaks partway through).
    """
    import soundfile as sf

    with opened(source) as f:
        try:
            sfile = sf.SoundFile(f)
        except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as e:
            if not av_available():
                raise _sf_error(e) from e
            f.seek(0)
            yield from _av_stream(f, samplerate, block_seconds)
            return
        import soxr

        with sfile:
            rate = sfile.samplerate
            resampler = soxr.ResampleStream(rate, samplerate, 1, dtype="float32") if rate != samplerate else None
            # read(), not blocks(): for MP3s libsndfile over-counts frames, and blocks() then hands out the
            # missing ones at the end as uninitialised memory (values up to 1e37 seen); read() returns
            # only the frames it decoded
            block_frames = max(1, int(block_seconds * rate))
            try:
                while True:
                    block = sfile.read(block_frames, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
                    out = resampler.resample_chunk(mono) if resampler is not None else mono
                    if out.size:
                        yield out
            except (RuntimeError, sf.LibsndfileError, ValueError) as e:
                raise MediaError(f"broken audio ({e})") from e
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if tail.size:
                    yield tail


def _av_stream(f: BinaryIO, samplerate: int, block_seconds: float) -> Iterator[np.ndarray]:
    import av

    pending: list[np.ndarray] = []
    have = 0
    want = int(block_seconds * samplerate)
    try:
        with av.open(f, mode="r") as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            resampler: Any = av.AudioResampler(format="flt", layout="mono", rate=samplerate)
            frames: Iterator[Any] = container.decode(container.streams.audio[0])
            for frame in _with_flush(frames):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    pending.append(arr)
                    have += arr.size
                if have >= want:
                    yield np.concatenate(pending)
                    pending, have = [], 0
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"broken audio ({_av_reason(e)})") from e
    if pending:
        yield np.concatenate(pending)


def _av_reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).splitlines()[0]


def _with_flush(frames: Iterator[Any]) -> Iterator[Any]:
    yield from frames
    yield None  # flushes the resampler


def _quietest_cut(buf: np.ndarray, end: int, search: int, frame: int) -> int:
    """The start of the quietest ``frame``-long stretch in ``buf[end - search:end]``."""
    lo = max(0, end - search)
    seg = buf[lo:end]
    n = seg.size // frame
    if n < 2:
        return end
    energy = (seg[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


def windows(
    source: Source,
    samplerate: int,
    window_seconds: float = WINDOW_SECONDS,
) -> Iterator[tuple[float, np.ndarray]]:
    """(start second, mono samples) windows of about ``window_seconds``, cut where it is quiet."""
    size = int(window_seconds * samplerate)
    search = int(CUT_SEARCH_SECONDS * samplerate)
    frame = max(1, samplerate // 20)  # 50 ms
    buf = np.zeros(0, dtype=np.float32)
    offset = 0  # samples already yielded
    for block in stream(source, samplerate):
        buf = np.concatenate([buf, block]) if buf.size else block
        while buf.size >= size + search:
            cut = _quietest_cut(buf, size, search, frame)
            yield offset / samplerate, buf[:cut]
            buf = buf[cut:].copy()
            offset += cut
    while buf.size > size:
        cut = _quietest_cut(buf, size, search, frame)
        yield offset / samplerate, buf[:cut]
        buf = buf[cut:].copy()
        offset += cut
    if buf.size:
        yield offset / samplerate, buf


def load_audio(source: Source, samplerate: int, max_seconds: float | None = None) -> np.ndarray:
    """A whole (short) file as one mono array, or its first ``max_seconds``."""
    parts: list[np.ndarray] = []
    have = 0
    limit = None if max_seconds is None else int(max_seconds * samplerate)
    for block in stream(source, samplerate):
        parts.append(block)
        have += block.size
        if limit is not None and have >= limit:
            break
    if not parts:
        raise MediaError("no audio samples")
    out = np.concatenate(parts)
    return out if limit is None else out[:limit]
