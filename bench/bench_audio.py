"""Audio with the offline `builtin` model: speed, memory, and what the zero-shot sound path gets right.

    python bench/bench_audio.py [--minutes 30]

1. Speed: the spoken test clips (tests/data/speech) and a generated recording of ``--minutes``
   (quiet noise with three spoken sentences), each as x real time, against decoding alone
   (soundfile + soxr, measured in the same run) as the baseline; peak traced memory of the long one.
2. Zero-shot sounds: text->audio and audio->text R@1 of SoundNet's ConSE bridge on real sound
   effects with plain captions (pygame-ce's examples, and Debian's sound-theme-freedesktop when
   installed), next to chance.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech"
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")

# plain captions a user might type; written before running the model
SOUNDS = {
    "pygame:car_door.wav": "a car door slamming shut",
    "pygame:boom.wav": "an explosion",
    "pygame:punch.wav": "a punch hitting someone",
    "pygame:whiff.wav": "a swoosh of air",
    "freedesktop:bell.oga": "a bell ringing",
    "freedesktop:phone-incoming-call.oga": "a telephone ringing",
    "freedesktop:camera-shutter.oga": "a camera shutter click",
    "freedesktop:alarm-clock-elapsed.oga": "an alarm clock going off",
    "freedesktop:trash-empty.oga": "crumpling paper in a bin",
    "freedesktop:message-new-instant.oga": "a chat notification chime",
    "freedesktop:power-plug.oga": "an electronic beep",
}


def long_recording(path: Path, minutes: int) -> None:
    rate = 16000
    said = {250.0: "garden", 1055.0: "budget", 1562.0: "server"}
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as f:
        for sec in range(0, minutes * 60, 10):
            block = (rng.standard_normal(rate * 10) * 0.003).astype(np.float32)
            for at, name in said.items():
                if sec <= at < sec + 10:
                    clip, _ = sf.read(SPEECH / f"{name}.ogg", dtype="float32")
                    i = int((at - sec) * rate)
                    block = np.concatenate([block[:i], 0.8 * clip, block[i + clip.size :]])
            f.write(block)


def sound_files() -> dict[Path, str]:
    spec = importlib.util.find_spec("pygame")
    out = {}
    for key, caption in SOUNDS.items():
        source, name = key.split(":")
        if source == "pygame" and spec and spec.submodule_search_locations:
            path = Path(spec.submodule_search_locations[0]) / "examples" / "data" / name
        else:
            path = FREEDESKTOP / name
        if path.is_file():
            out[path] = caption
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=int, default=30)
    args = ap.parse_args()
    import torch

    from mmsearch.encoders import load_encoder
    from mmsearch.evaluation import recall_at_k
    from mmsearch.modalities.audio import analyze
    from mmsearch.modalities.audio_io import stream

    enc = load_encoder("builtin")
    analyze(SPEECH / "dog.ogg", enc)  # load Whisper and SoundNet
    print(f"torch threads: {torch.get_num_threads()}")

    clips = sorted(SPEECH.glob("*.ogg"))
    audio_s = sum(sf.info(str(c)).duration for c in clips)
    t = time.perf_counter()
    for c in clips:
        for _ in stream(c, 22050):
            pass
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    for c in clips:
        analyze(c, enc)
    speech_s = time.perf_counter() - t
    print(
        f"spoken clips: {len(clips)} clips, {audio_s:.1f} s of audio: analysed in {speech_s:.2f} s "
        f"= {audio_s / speech_s:.1f}x real time, {len(clips) / speech_s:.2f} clips/s "
        f"(decode alone {audio_s / decode_s:.0f}x real time; analysis/decode {speech_s / decode_s:.0f}x)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        long_recording(path, args.minutes)
        seconds = args.minutes * 60
        t = time.perf_counter()
        for _ in stream(path, 22050):
            pass
        decode_s = time.perf_counter() - t
        tracemalloc.start()
        t = time.perf_counter()
        result = analyze(path, enc)
        took = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    whole = seconds * 22050 * 4
    print(
        f"{args.minutes}-minute recording: analysed in {took:.1f} s = {seconds / took:.0f}x real time "
        f"(decode alone {seconds / decode_s:.0f}x); {sum(s.kind == 'speech' for s in result.segments)} speech "
        f"segments; peak traced memory {peak / 1e6:.1f} MB vs {whole / 1e6:.0f} MB for the decoded file "
        f"({peak / whole:.3f}x)"
    )

    sounds = sound_files()
    if len(sounds) < 2:
        print("zero-shot sounds: no sound files found (pip install pygame-ce; apt install sound-theme-freedesktop)")
        return
    items = np.stack([analyze(p, enc).vector for p in sounds])
    texts = enc.encode_text(list(sounds.values()))
    r = recall_at_k(texts, items, list(range(len(sounds))))
    print(
        f"zero-shot sounds (SoundNet -> ImageNet classes -> MiniLM), {len(sounds)} real effects: "
        f"text->audio R@1 {r['text_to_item']['R@1']:.3f} R@5 {r['text_to_item']['R@5']:.3f}, "
        f"audio->text R@1 {r['item_to_text']['R@1']:.3f}; chance R@1 {1 / len(sounds):.3f}"
    )
    for (path, caption), row in zip(sounds.items(), texts @ items.T, strict=True):
        best = list(sounds)[int(np.argmax(row))]
        print(f"  {caption!r:32} -> {best.name}{'  (right)' if best == path else ''}")


if __name__ == "__main__":
    main()
