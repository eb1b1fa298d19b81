"""Videos: found at the *moment* something is seen, said or heard.

A video streams through PyAV (never whole in memory). Frames are sampled at shot changes (a cheap
difference of 32x18 grey thumbnails between consecutive frames) and at least one every
``FRAME_EVERY_S`` seconds, decoded straight to the model's input size, and embedded by the image tower;
the soundtrack goes through the audio modality's analysis (speech with its words and times, sound
windows). Every sampled frame and spoken segment is kept as a segment with its time, so a hit reports
where it matches (``[1:23] at 0:42 (frame)``, ``at 0:42 "we land at six"``); the item's own vector pools
them. Long files are bounded: at most ``MAX_FRAMES`` frames (sampled by seeking past ``SCAN_SECONDS``)
and ``MAX_SOUNDTRACK_SECONDS`` of soundtrack, which the run's summary says.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mmsearch.encoders import AUDIO, IMAGE, TEXT, l2_normalize
from mmsearch.errors import CHANGED_WHILE_READ, MediaError, QueryError
from mmsearch.files import hash_stream
from mmsearch.modalities.audio import SPEECH, analyze, can_index_audio, timed_about
from mmsearch.modalities.audio_io import known_other
from mmsearch.modalities.base import (
    CAPTION,
    NAME,
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
    from PIL import Image

    from mmsearch.encoders.towers import Towers

VIDEO = "video"
FRAME = "frame"
VIDEO_EXTS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
# At least one frame every this many seconds (bench/bench_video.py: the made-up scenes are each found
# within one interval, at ~6 frames embedded per video second less than at 0.5 s).
FRAME_EVERY_S = 2.0
CUT_THRESHOLD = 30.0  # mean absolute difference of 32x18 grey thumbnails (0-255) that makes a shot change
MIN_CUT_GAP_S = 0.5  # two cuts closer than this keep one frame (a flash, a fast pan)
MAX_FRAMES = 600  # per file: a longer video is sampled more sparsely, and the summary says so
SCAN_SECONDS = 3600.0  # longer videos are not decoded through: their frames are taken by seeking
MAX_SOUNDTRACK_SECONDS = 3600.0  # speech and sound are analysed this far
FRAME_BATCH = 32


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    width: int
    height: int
    fps: float
    codec: str
    has_audio: bool
    created: float | None  # the container's creation time, epoch seconds


def sniff(f: BinaryIO) -> None:
    """Refuse a file that is recognisably something else (PyAV would open a PNG as a one-frame video).

    Raises:
        MediaError: empty, or an image, a document, an archive, a web page.
    """
    f.seek(0)
    head = f.read(512)
    f.seek(0)
    if not head:
        raise MediaError("empty file")
    what = known_other(head)
    if what is not None:
        raise MediaError(f"not a video: the file is {what}")


def _created(metadata: Mapping[str, str]) -> float | None:
    value = metadata.get("creation_time")
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return t if t > 315_532_800 else None  # 1980 and later: encoders write 1970-01-01 for "unknown"


def probe(f: BinaryIO) -> VideoInfo | None:
    """What the container says; None when it holds no video stream (a soundtrack alone).

    Raises:
        MediaError: not a container PyAV can read.
    """
    import av

    sniff(f)
    try:
        with av.open(f, mode="r") as c:
            has_audio = bool(c.streams.audio)
            if not c.streams.video:
                if has_audio:
                    return None
                raise MediaError("no video or audio stream")
            vs = c.streams.video[0]
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            else:
                duration = (c.duration or 0) / 1_000_000
            fps = float(vs.average_rate or vs.guessed_rate or 0)
            ctx = vs.codec_context
            return VideoInfo(
                duration, int(ctx.width or 0), int(ctx.height or 0), round(fps, 3), str(ctx.name), has_audio,
                _created(dict(c.metadata)),
            )  # fmt: skip
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"not a readable video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    finally:
        f.seek(0)


def _size(width: int, height: int, side: int) -> tuple[int, int]:
    """The frame size whose short side is ``side`` (even numbers, as scalers like)."""
    scale = side / max(1, min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_frames(
    f: BinaryIO, info: VideoInfo, side: int, stopped: Any = lambda: False
) -> Iterator[tuple[float, Image.Image]]:
    """(second, RGB picture) of the frames worth embedding, short side ``side``, in time order.

    Up to SCAN_SECONDS the file is decoded through and a frame is kept at each shot change and at least
    every ``every`` seconds; past it, ``MAX_FRAMES`` moments are decoded by seeking to them.
    """
    import av

    every = max(FRAME_EVERY_S, info.duration / MAX_FRAMES) if info.duration else FRAME_EVERY_S
    w, h = _size(info.width, info.height, side)
    try:
        with av.open(f, mode="r") as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            if info.duration > SCAN_SECONDS:
                yield from _seek_frames(c, vs, info.duration, w, h, stopped)
                return
            prev: np.ndarray | None = None
            last = -1e9
            kept = 0
            for frame in c.decode(vs):
                if stopped():
                    raise KeyboardInterrupt
                t = float(frame.time or 0.0)
                tiny = _tiny(frame)
                cut = prev is not None and float(np.abs(tiny - prev).mean()) > CUT_THRESHOLD
                prev = tiny
                if kept < MAX_FRAMES and (t - last >= every or (cut and t - last >= MIN_CUT_GAP_S)):
                    yield t, frame.reformat(width=w, height=h, format="rgb24").to_image()
                    last, kept = t, kept + 1
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"broken video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def _tiny(frame: Any) -> np.ndarray:
    """A 32x18 grey thumbnail for cut detection: block means of the luma plane as decoded (no colour
    conversion: a third of the cost of scaling every frame), or a scaled copy for formats without one."""
    name = frame.format.name
    if name.startswith(("yuv", "yuvj", "nv12", "nv21", "gray")):
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
        sy, sx = max(1, frame.height // 18), max(1, frame.width // 32)
        h, w = (frame.height // sy) * sy, (frame.width // sx) * sx
        block = luma[:h, :w].reshape(h // sy, sy, w // sx, sx).mean(axis=(1, 3), dtype=np.float32)
        return block[:18, :32]
    return frame.reformat(width=32, height=18, format="gray").to_ndarray().astype(np.float32)


def _seek_frames(c: Any, vs: Any, duration: float, w: int, h: int, stopped: Any) -> Iterator[tuple[float, Any]]:
    """MAX_FRAMES moments spread over a long video, each decoded from the keyframe before it."""
    tb = float(vs.time_base or 1)
    for target in np.linspace(0.0, max(0.0, duration - 0.5), MAX_FRAMES):
        if stopped():
            raise KeyboardInterrupt
        c.seek(int(target / tb), stream=vs, backward=True)
        for frame in c.decode(vs):
            t = float(frame.time or 0.0)
            if t + 1e-3 >= target:
                yield t, frame.reformat(width=w, height=h, format="rgb24").to_image()
                break


def _frames_in_thread(f: BinaryIO, info: VideoInfo, side: int, stopped: Any) -> Iterator[tuple[float, Image.Image]]:
    """sample_frames, decoded in a thread a few frames ahead of the model (PyAV releases the GIL)."""
    ahead: queue.Queue[tuple[float, Any] | BaseException | None] = queue.Queue(maxsize=2 * FRAME_BATCH)
    done = threading.Event()

    def produce() -> None:
        try:
            for item in sample_frames(f, info, side, lambda: stopped() or done.is_set()):
                ahead.put(item)
        except BaseException as e:  # handed to the consumer
            ahead.put(e)
        else:
            ahead.put(None)

    worker = threading.Thread(target=produce, name="mmsearch-video", daemon=True)
    worker.start()
    try:
        while (got := ahead.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        done.set()
        with contextlib.suppress(queue.Empty):
            while True:
                ahead.get_nowait()
        worker.join(5)


@dataclass
class VideoAnalysis:
    vector: np.ndarray  # in the image role's space
    segments: list[SegmentRecord]
    transcript: str
    note: str | None
    speech: np.ndarray | None = None  # the mean of what is said, in the text role's space


def analyze_video(f: BinaryIO, info: VideoInfo, towers: Towers, stopped: Any = lambda: False) -> VideoAnalysis:
    """Frames through the image tower, the soundtrack through the audio analysis; the pooled vector.

    Raises:
        MediaError: nothing could be embedded (no decodable frame, and nothing heard in the same space).
    """
    encoder = towers.need(IMAGE)
    side = encoder.image_size or 224
    times: list[float] = []
    vecs: list[np.ndarray] = []
    batch: list[tuple[float, Any]] = []
    for item in _frames_in_thread(f, info, side, stopped):
        batch.append(item)
        if len(batch) == FRAME_BATCH:
            vecs.append(encoder.encode_image([im for _, im in batch]))
            times += [t for t, _ in batch]
            batch = []
    if batch:
        vecs.append(encoder.encode_image([im for _, im in batch]))
        times += [t for t, _ in batch]
    segments: list[SegmentRecord] = []
    frame_vecs = np.concatenate(vecs) if vecs else np.zeros((0, encoder.dim), np.float32)
    for i, (t, v) in enumerate(zip(times, frame_vecs, strict=True)):
        end = times[i + 1] if i + 1 < len(times) else max(info.duration, t)
        segments.append(SegmentRecord(t, end, FRAME, v))
    notes = []
    if info.duration > MAX_FRAMES * FRAME_EVERY_S:
        notes.append(f"{len(times)} frames, one every {info.duration / max(1, len(times)):.0f} s (frame cap)")
    heard: list[SegmentRecord] = []
    transcript = ""
    speech_vec = None
    if info.has_audio and can_index_audio(towers):
        f.seek(0)
        try:
            sound = analyze(f, towers, should_stop=stopped, max_seconds=MAX_SOUNDTRACK_SECONDS)
        except MediaError:
            sound = None  # a silent or undecodable soundtrack: the frames still tell
        if sound is not None:
            heard = [SegmentRecord(s.start, s.end, s.kind, s.vector, s.text) for s in sound.segments]
            transcript, speech_vec = sound.transcript, sound.speech
            if info.duration > MAX_SOUNDTRACK_SECONDS:
                notes.append(f"soundtrack analysed for its first {MAX_SOUNDTRACK_SECONDS / 60:.0f} min")
    # what shares the frames' space pools into the own vector: the frames, and the words when one tower
    # reads both (else the words have their own space: the item's speech vector)
    shared = [s for s in heard if s.kind == SPEECH and towers.same(TEXT, IMAGE)]
    shared += [s for s in heard if s.kind != SPEECH and towers.same(AUDIO, IMAGE)] if not segments else []
    if not segments and not shared:
        raise MediaError("no decodable frames and nothing to hear")
    pooled = [_pool(group) for group in (segments, [s for s in shared if s.kind == SPEECH]) if group]
    if not pooled:
        pooled = [_pool(shared)]
    vector = l2_normalize(np.sum([l2_normalize(p[None])[0] for p in pooled], axis=0)[None])[0]
    merged = sorted([*segments, *heard], key=lambda s: (s.start, s.kind))
    return VideoAnalysis(vector, merged, transcript, "; ".join(notes) or None, speech_vec)


def _pool(segments: Sequence[SegmentRecord]) -> np.ndarray:
    """Duration-weighted mean of segment vectors."""
    w = np.array([max(s.end - s.start, 0.1) for s in segments], dtype=np.float32)
    return (w[:, None] * np.stack([s.vector for s in segments])).sum(axis=0) / w.sum()


def frame_at(f: BinaryIO, at: float, side: int) -> Image.Image:
    """The frame shown at second ``at`` (the first one when ``at`` is past the end).

    Raises:
        MediaError: no frame can be decoded.
    """
    import av

    info = probe(f)
    if info is None:
        raise MediaError("no video stream")
    w, h = _size(info.width, info.height, side)
    try:
        with av.open(f, mode="r") as c:
            vs = c.streams.video[0]
            at = min(max(0.0, at), max(0.0, info.duration - 0.05))
            if at > 0:
                c.seek(int(at / float(vs.time_base or 1)), stream=vs, backward=True)
            last = None
            for frame in c.decode(vs):
                last = frame
                if float(frame.time or 0.0) + 1e-3 >= at:
                    break
            if last is None:
                raise MediaError("no decodable frames")
            return last.reformat(width=w, height=h, format="rgb24").to_image()
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"broken video ({e})") from e


class VideoModality(BaseModality):
    name = VIDEO
    label = ("video", "videos")
    spaces = (
        Space(VIDEO, tower=IMAGE),  # its frames: the image tower's space
        Space(VIDEO, CAPTION, 1.0),
        Space(VIDEO, NAME, 0.5),
        Space(VIDEO, SPEECH_KIND, 1.0),  # what is said, when words and pictures are different towers
    )
    owns_caption = True
    batch = 1  # one file per embed call: a film may be long
    segmented = True
    thumbnails = True
    player = "video"
    becomes = (AUDIO,)  # a video file with no picture is indexed as a sound
    moments = frozenset({FRAME, SPEECH})  # a film ranks by the scene or the line that matches best
    segment_roles = {FRAME: IMAGE, SPEECH: TEXT, "sound": AUDIO}
    media_types = {
        ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
        ".webm": "video/webm", ".avi": "video/x-msvideo",
    }  # fmt: skip

    def indexable(self, towers: Towers) -> bool:
        return towers.get(IMAGE) is not None

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        """Hash in chunks and read the container's header; frames are decoded in ``embed``."""
        item.content_hash, read = hash_stream(f, item.size)
        check_version(f, item)
        if read != item.size:
            raise MediaError(CHANGED_WHILE_READ)
        if item.size == 0:
            raise MediaError("empty file")
        info = probe(f)
        if info is None:  # a soundtrack alone: a sound
            item.modality = AUDIO
            from mmsearch.modalities import get

            get(AUDIO).read(f, item, job)
            return
        reused = job.reusable(item.content_hash)
        if reused is not None:
            item.adopt(reused)
            return
        item.attrs.width, item.attrs.height, item.attrs.duration = info.width, info.height, round(info.duration, 3)
        item.attrs.taken_at = info.created
        item.attrs.info = {"fps": info.fps, "codec": info.codec}
        item.payload = info

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        from mmsearch.modalities import get

        for x in batch:
            if x.vector is not None:
                continue
            if x.modality != VIDEO:
                get(x.modality).embed([x], towers, job)
                continue
            try:
                with job.open(x.path) as f:
                    check_version(f, x)
                    result = analyze_video(f, x.payload, towers, job.stopped)
                    check_version(f, x)
            except MediaError as e:
                x.error = str(e)
                continue
            x.vector, x.segments, x.payload, x.fresh = result.vector, result.segments, None, True
            x.attrs.excerpt = excerpt(result.transcript) if result.transcript else None
            x.note = result.note
            if result.speech is not None and not towers.same(TEXT, IMAGE):
                x.extras[f"{VIDEO}.{SPEECH_KIND}"] = result.speech

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        from mmsearch.files import open_regular

        if towers.get(IMAGE) is None:
            return {}
        try:
            with open_regular(value, follow_symlinks=True) as f:
                info = probe(f)
                if info is None:
                    raise MediaError("no video stream")
                result = analyze_video(f, info, towers)
        except (MediaError, OSError) as e:
            raise QueryError(f"cannot use {value} as a query video: {e}") from e
        out = {}
        for role in roles:
            if role == IMAGE or towers.same(role, IMAGE):
                out[role] = result.vector[None]
            elif towers.same(role, TEXT) and result.speech is not None:
                out[role] = result.speech[None]
        return out

    def about(self, metadata: Mapping[str, Any]) -> str:
        return timed_about(metadata)

    def thumbnail(self, f: BinaryIO, size: int, at: float | None = None) -> Image.Image | None:
        return frame_at(f, at or 0.0, size)
