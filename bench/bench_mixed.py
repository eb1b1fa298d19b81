"""A newcomer's mixed folder with builtin: `--target any` ranks of each subject's photo and note, and
sound-to-sound over real sounds (each re-encoded, trimmed by 10 %, 6 dB quieter: its original's rank and
margin).

    python -m bench.bench_mixed [--no-record]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench._report import record

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from mixed_folder import SUBJECTS, write
    from test_sound_similarity import altered, distinct_sounds, load

    from mmsearch import Engine
    from mmsearch.encoders import load_encoder

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-mixed-"))
    lines = [f"{'query':18} {'photo':16} {'rank':>4}   {'note':14} {'rank':>4}   top 3"]
    try:
        lib = write(tmp / "lib")
        with Engine.open(tmp / "idx", model="builtin", create=True) as eng:
            eng.index([lib])
            for query, (photo, note, _) in SUBJECTS.items():
                names = [Path(h.path).name for h in eng.search(query, target="any", k=50)]
                lines.append(
                    f"{query!r:18} {photo:16} {names.index(photo) + 1:>4}   {note:14} {names.index(note) + 1:>4}   "
                    + ", ".join(names[:3])
                )
                print(lines[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    enc = load_encoder("soundsim")
    paths = distinct_sounds()
    originals = [load(p) for p in paths]
    a, b = enc.encode_audio(originals), enc.encode_audio([altered(x) for x in originals])
    stem = [p.name.split(".")[0] for p in paths]
    sims = b @ a.T
    first = sum(stem[int(sims[i].argmax())] == stem[i] for i in range(len(paths)))
    margins = [sims[i, i] - max(sims[i, j] for j in range(len(paths)) if stem[j] != stem[i]) for i in range(len(paths))]
    bi = load_encoder("builtin").encode_audio(originals)
    bsims = bi @ bi.T
    off = ~np.eye(len(paths), dtype=bool)
    sound = (
        f"{len(paths)} files (pygame-ce's examples, house_lo in 6 formats counted as one sound; Debian's "
        f"freedesktop theme without its links): original first for {first}/{len(paths)}; margin over the best "
        f"other sound min {min(margins):.3f}, median {np.median(margins):.3f}; median similarity of two different "
        f"sounds {np.median((a @ a.T)[off]):.3f} in the sound space vs {np.median(bsims[off]):.3f} for builtin's "
        "sound vectors (text space)"
    )
    print(sound)
    body = (
        "`--target any`, builtin, 16 sample photos + 8 notes + 4 sounds (tests/mixed_folder.py): rank of each "
        "subject's photo and note.\n\n```\n"
        + "\n".join(lines)
        + "\n```\n\nSound to sound (`soundsim`): "
        + sound
        + "\n"
    )
    record("mixed", "Mixed folder and sound-to-sound (issue 17)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
