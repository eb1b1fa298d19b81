"""The real-photo evaluation sets: sample photos shipped by scikit-image, scikit-learn and
matplotlib, with natural queries written for them (three per photo, written before any model ran).

- ``pairs.csv`` (tests/data/real_photos.csv): all 16 sample *photographs* of the three packages,
  including scientific images (moon, deep field), textures (brick, grass, gravel) and a scanned page.
- ``everyday.csv`` (tests/data/everyday_photos.csv): the 10 of them a photo library holds, by a rule
  fixed up front: photographs of everyday subjects (people, animals, objects, vehicles, buildings,
  plants); textures, scientific images and documents left out.

    python tests/real_photos.py DEST    # copies the photos, pairs.csv and everyday.csv into DEST
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def sources() -> dict[str, Path]:
    import matplotlib
    import skimage.data
    import sklearn.datasets

    sk = Path(skimage.data.__file__).parent
    sl = Path(sklearn.datasets.__file__).parent / "images"
    mpl = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    return {
        "cat.png": sk / "chelsea.png",
        "coffee.png": sk / "coffee.png",
        "astronaut.png": sk / "astronaut.png",
        "rocket.jpg": sk / "rocket.jpg",
        "camera.png": sk / "camera.png",
        "motorcycle.png": sk / "motorcycle_left.png",
        "galaxies.jpg": sk / "hubble_deep_field.jpg",
        "moon.png": sk / "moon.png",
        "coins.png": sk / "coins.png",
        "page.png": sk / "page.png",
        "bricks.png": sk / "brick.png",
        "grass.png": sk / "grass.png",
        "gravel.png": sk / "gravel.png",
        "temple.jpg": sl / "china.jpg",
        "flower.jpg": sl / "flower.jpg",
        "grace_hopper.jpg": mpl / "grace_hopper.jpg",
    }


def materialize(dest: Path) -> Path:
    """Copy the photos and both pairs files into ``dest``; returns the full pairs file."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in sources().items():
        shutil.copyfile(src, dest / name)
    shutil.copyfile(DATA / "everyday_photos.csv", dest / "everyday.csv")
    return Path(shutil.copyfile(DATA / "real_photos.csv", dest / "pairs.csv"))


if __name__ == "__main__":
    print(materialize(Path(sys.argv[1])))
