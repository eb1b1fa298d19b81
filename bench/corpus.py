"""Generated photo folders for the indexing benchmarks, cached between runs.

Camera-sized JPEGs (12 MP, 4000x3000, quality 90, EXIF with capture time, camera and a mix of
orientations) made from the real sample photos of scikit-image, each one a different crop, flip,
colour and grain so no two share content (shared content would be reused, not embedded), plus small
PNGs like screenshots and icons.
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(os.environ.get("MMSEARCH_BENCH_CACHE", Path.home() / ".cache" / "mmsearch-bench"))
ORIENTATIONS = (1, 1, 1, 1, 6, 6, 8, 3)  # mostly landscape, some portrait and upside-down


@functools.lru_cache(maxsize=1)
def _sources() -> list[np.ndarray]:
    from skimage import data

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "immunohistochemistry")
    out = []
    for n in names:
        im = getattr(data, n)()
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        out.append(np.ascontiguousarray(im[..., :3]))
    return out


def _camera_jpeg(args: tuple[int, str, int, int]) -> None:
    i, path, width, height = args
    rng = np.random.default_rng(i)
    src = _sources()[i % 7]
    h, w = src.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = src[y : y + ch, x : x + cw].astype(np.float32) * rng.uniform(0.7, 1.2, 3)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    small = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
    im = small.resize((width, height), Image.Resampling.BILINEAR)
    grain = rng.normal(0, 6, (height // 4, width // 4, 1)).astype(np.float32)  # sensor noise, upsampled
    noisy = np.asarray(im, dtype=np.float32) + np.kron(grain, np.ones((4, 4, 1), np.float32))[:height, :width]
    im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "BenchCam", "Model 12"  # Make, Model
    exif[0x0112] = ORIENTATIONS[i % len(ORIENTATIONS)]
    exif.get_ifd(0x8769)[0x9003] = f"2024:{1 + i % 12:02d}:{1 + i % 28:02d} 12:{i % 60:02d}:00"
    im.save(path, "JPEG", quality=90, exif=exif.tobytes())


def _small_png(args: tuple[int, str]) -> None:
    i, path = args
    rng = np.random.default_rng(10_000 + i)
    size = int(rng.choice([64, 128, 256, 512]))
    arr = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    for _ in range(6):  # flat shapes, as in screenshots and icons
        x0, y0 = rng.integers(0, size, 2)
        arr[y0 : y0 + size // 4, x0 : x0 + size // 3] = rng.integers(0, 255, 3, dtype=np.uint8)
    Image.fromarray(arr).save(path, "PNG")


def photo_folder(n_jpeg: int, n_png: int, width: int = 4000, height: int = 3000) -> Path:
    """A cached folder of ``n_jpeg`` camera JPEGs and ``n_png`` small PNGs (made once, in parallel)."""
    key = hashlib.sha1(f"v1-{n_jpeg}-{n_png}-{width}x{height}".encode()).hexdigest()[:8]
    root = CACHE / f"photos-{n_jpeg}-{n_png}-{key}"
    done = root / ".complete"
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(root / f"IMG_{i:05d}.jpg"), width, height) for i in range(n_jpeg)]
    pngs = [(i, str(root / f"screenshot-{i:04d}.png")) for i in range(n_png)]
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(_camera_jpeg, [j for j in jobs if not Path(j[1]).exists()], chunksize=4))
        list(pool.map(_small_png, [p for p in pngs if not Path(p[1]).exists()], chunksize=16))
    done.touch()
    return root


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file())
