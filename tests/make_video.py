"""Videos made for the tests: scenes cut from the real sample photos (with fades between them) and speech
from ``tests/data/speech`` placed at known times, so the expected moment of every query is known.

``write_video(path, scenes, speech)`` writes an H.264 + AAC mp4 (or VP8 + Opus webm) with PyAV;
``python tests/make_video.py DIR`` writes the set the tests use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"
RATE = 16000


def _frame(picture: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The picture cropped to the frame's aspect and resized."""
    w, h = picture.size
    target = size[0] / size[1]
    if w / h > target:
        nw = int(h * target)
        picture = picture.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
    else:
        nh = int(w / target)
        picture = picture.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))
    return np.asarray(picture.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32)


def speech_clip(name: str) -> np.ndarray:
    """A spoken sentence of tests/data/speech as 16 kHz mono float32."""
    from mmsearch.modalities.audio_io import load_audio

    return load_audio(DATA / "speech" / f"{name}.ogg", RATE)


def write_video(
    path: Path,
    scenes: Sequence[tuple[Image.Image, float]],
    speech: Sequence[tuple[float, str]] = (),
    *,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    fade: float = 0.5,
    codec: str = "libx264",
    created: str | None = None,
) -> float:
    """Write the scenes (picture, seconds) in order, cross-faded over ``fade`` s, with each (second, clip)
    of ``speech`` on the soundtrack (none: no audio stream). Returns the duration in seconds."""
    import av

    duration = sum(s for _, s in scenes)
    frames = [_frame(p, size) for p, _ in scenes]
    starts = np.cumsum([0.0, *[s for _, s in scenes]])[:-1]
    audio_codec = "libopus" if codec.startswith("libvpx") else "aac"
    with av.open(str(path), "w") as out:
        if created:
            out.metadata["creation_time"] = created  # what phones write: when it was filmed
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if codec == "libx264":
            vs.options = {"preset": "ultrafast", "g": str(fps * 2)}  # a keyframe every 2 s, like a phone
        as_ = None
        if speech:
            as_ = out.add_stream(audio_codec, rate=48000 if audio_codec == "libopus" else RATE)
            as_.layout = "mono"
        for i in range(int(round(duration * fps))):
            t = i / fps
            k = int(np.searchsorted(starts, t, side="right") - 1)
            img = frames[k]
            into = t - starts[k]
            if k > 0 and into < fade:  # cross-fade from the previous scene
                a = into / fade
                img = (1 - a) * frames[k - 1] + a * frames[k]
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if as_ is not None:
            rate = as_.rate
            track = np.zeros(int(duration * RATE), dtype=np.float32)
            for at, name in speech:
                clip = speech_clip(name)
                start = int(at * RATE)
                track[start : start + clip.size] += clip[: max(0, track.size - start)]
            if rate != RATE:
                import soxr

                track = soxr.resample(track, RATE, rate).astype(np.float32)
            step = 1024
            for i in range(0, track.size, step):
                chunk = track[i : i + step]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate = rate
                frame.pts = i
                frame.time_base = Fraction(1, rate)
                for packet in as_.encode(frame):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    return duration


def sample_photo(name: str) -> Image.Image:
    from real_photos import sources

    return Image.open(sources()[name]).convert("RGB")


# The made-up films: (file, [(photo, seconds)], [(second, spoken clip)]). Every scene and every sentence
# has a known moment.
FILMS = (
    ("pets-and-coffee.mp4", [("cat.png", 4.0), ("coffee.png", 4.0), ("motorcycle.png", 4.0)], [(1.0, "flight")]),
    ("space-day.mp4", [("rocket.jpg", 4.0), ("astronaut.png", 4.0), ("camera.png", 4.0)], [(6.0, "budget")]),
    ("garden-walk.mp4", [("flower.jpg", 4.0), ("temple.jpg", 4.0), ("coins.png", 4.0)], []),
)


def make_films(root: Path) -> dict[str, float]:
    """Write FILMS into ``root``; returns file -> duration."""
    sys.path.insert(0, str(Path(__file__).parent))
    root.mkdir(parents=True, exist_ok=True)
    return {
        name: write_video(root / name, [(sample_photo(p), s) for p, s in scenes], speech)
        for name, scenes, speech in FILMS
    }


if __name__ == "__main__":
    print(make_films(Path(sys.argv[1])))
