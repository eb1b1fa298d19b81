"""The real-photo evaluation set: sample photos shipped by scikit-image, scikit-learn and
matplotlib, with the natural queries in tests/data/real_photos.csv (three per photo).

    python tests/real_photos.py DEST    # copies the photos and pairs.csv into DEST
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CAPTIONS = Path(__file__).resolve().parent / "data" / "real_photos.csv"


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
    """Copy the photos and the pairs file into ``dest``; returns the pairs file."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in sources().items():
        shutil.copyfile(src, dest / name)
    return Path(shutil.copyfile(CAPTIONS, dest / "pairs.csv"))


if __name__ == "__main__":
    print(materialize(Path(sys.argv[1])))
