"""Regenerate tests/data/speech/*.ogg (spoken sentences) with espeak-ng.

The clips are committed, so tests and CI need no speech synthesiser; this script documents how
they were made: `apt install espeak-ng`, then `python tests/make_speech.py`. Each row of
tests/data/speech.csv names a clip, the sentence it says, and a paraphrased query that should find it.
"""

from __future__ import annotations

import csv
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf
import soxr

HERE = Path(__file__).parent / "data"
RATE = 16000


def main() -> None:
    rows = list(csv.DictReader((HERE / "speech.csv").read_text().splitlines()))
    done = set()
    for row in rows:
        out = HERE / row["filepath"]
        if out in done:
            continue
        done.add(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "x.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), row["said"]], check=True)
            x, sr = sf.read(wav, dtype="float32")
        sf.write(out, soxr.resample(x, sr, RATE), RATE, format="OGG", subtype="VORBIS")
        print(out, round(len(x) / sr, 2), "s")


if __name__ == "__main__":
    main()
