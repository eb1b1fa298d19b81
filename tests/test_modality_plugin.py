"""A modality is one unit: a toy one, written here and registered from here, is walked, read, embedded by its
own tower, stored, searched and served like the built-in ones, with no edit anywhere else."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import requests
from conftest import COLOURS, DIM, PALETTE, solid
from serving import Server
from typer.testing import CliRunner

from mmsearch import Engine, modalities
from mmsearch.cli import app
from mmsearch.encoders import IMAGE, l2_normalize
from mmsearch.encoders.towers import Towers
from mmsearch.errors import MediaError, QueryError
from mmsearch.files import prefix_hash
from mmsearch.modalities import NAME, BaseModality, Pending, ReadJob, Space

runner = CliRunner()


def light_tower(rgb: np.ndarray) -> np.ndarray:
    """A light sensor's reading (r, g, b) into the fake model's space: dimensions 0-5 score the palette."""
    out = np.zeros((len(rgb), DIM), dtype=np.float32)
    for j, c in enumerate(PALETTE.values()):
        out[:, j] = 3.0 * np.exp(-np.sum((rgb - np.array(c)) ** 2, axis=1) / (2 * 60.0**2))
    return l2_normalize(out + 1e-3)


def reading(data: bytes) -> np.ndarray:
    try:
        values = [float(v) for v in data.decode("ascii").strip().split(",")]
    except (UnicodeDecodeError, ValueError) as e:
        raise MediaError("not a light reading (r,g,b)") from e
    if len(values) != 3:
        raise MediaError("not a light reading (r,g,b)")
    return np.array(values, dtype=np.float32)


class LightSensor(BaseModality):
    """``*.light`` files: one "r,g,b" reading of a light sensor."""

    name = "light"
    label = ("reading", "readings")
    spaces = (Space("light", tower=IMAGE), Space("light", NAME, 0.5))  # its tower maps into the image space
    media_types = {".light": "text/csv"}

    def indexable(self, towers: Towers) -> bool:
        image = towers.get(IMAGE)
        return image is not None and image.dim == DIM  # its tower maps into the fake model's space

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        data = f.read(256)
        item.content_hash = prefix_hash(data, item.size)
        rgb = reading(data)
        item.payload = rgb
        item.attrs.info = {"rgb": [int(v) for v in rgb]}

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        need = [x for x in batch if x.vector is None]
        if need:
            for x, v in zip(need, light_tower(np.stack([x.payload for x in need])), strict=True):
                x.vector, x.payload, x.fresh = v, None, True

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        try:
            return {IMAGE: light_tower(reading(Path(value).read_bytes())[None])} if IMAGE in roles else {}
        except (OSError, MediaError) as e:
            raise QueryError(f"cannot use {value} as a light reading: {e}") from e

    def about(self, metadata: Mapping[str, Any]) -> str:
        return f"light {metadata.get('rgb')}"


@pytest.fixture
def light() -> Iterator[LightSensor]:
    sensor = LightSensor()
    modalities.register(sensor)
    yield sensor
    modalities.unregister("light")


@pytest.fixture
def lit(tmp_path: Path, light: LightSensor) -> tuple[Path, Path]:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    for colour in COLOURS:
        (lib / f"{colour}-lamp.light").write_text(",".join(str(c) for c in PALETTE[colour]))
        solid(lib / f"{colour}.jpg", colour)
    (lib / "broken.light").write_text("not a reading")
    return lib, idx


def test_a_toy_modality_is_indexed_and_searched_through_the_engine(lit: tuple[Path, Path]) -> None:
    lib, idx = lit
    with Engine.open(idx, model="fake", create=True) as eng:
        report = eng.index([lib])
        assert report.added == 12 and [Path(p).name for p, _ in report.skipped] == ["broken.light"]
        assert eng.store.counts() == {"image": 6, "light": 6}
        for colour in COLOURS:
            hits = eng.search(text=colour, target="light", k=3)
            assert Path(hits[0].path).name == f"{colour}-lamp.light", colour
            assert hits[0].modality == "light" and hits[0].metadata["rgb"] == list(PALETTE[colour])
        mixed = eng.search(text="blue", target="any", k=2)
        assert {Path(h.path).name for h in mixed} == {"blue.jpg", "blue-lamp.light"}
        by_example = eng.search(parts=[_part(lib / "green-lamp.light")], target="image", k=1)
        assert Path(by_example[0].path).name == "green.jpg"  # a reading as a query finds the picture of its light
        np.testing.assert_array_equal(eng.vector_ids("light"), eng.store.ids("light"))
    # incremental like any other kind: nothing to do the second time, a changed reading re-read
    with Engine.open(idx) as eng:
        assert eng.index([lib]).unchanged == 12
        (lib / "red-lamp.light").write_text("20,40,220")
        again = eng.index([lib])
        assert again.updated == 1
        top = {Path(h.path).name for h in eng.search(text="blue", target="light", k=2)}
        assert top == {"blue-lamp.light", "red-lamp.light"}  # the red lamp now reads blue
    out = runner.invoke(app, ["query", "yellow", "-t", "light", "--index", str(idx), "-k", "1"])
    assert out.exit_code == 0 and "yellow-lamp.light" in out.stdout and "light [240, 220, 30]" in out.stdout
    info = runner.invoke(app, ["index", str(lib), "--index", str(idx)])
    assert "6 readings" in info.stdout


def _part(path: Path) -> Any:
    from mmsearch.search import QueryPart

    return QueryPart("light", path)


def test_a_toy_modality_is_served(lit: tuple[Path, Path]) -> None:
    from mmsearch.server import create_app

    lib, idx = lit
    with Engine.open(idx, model="fake", create=True) as eng:
        eng.index([lib])
    s = Server(create_app(idx))
    try:
        hits = requests.post(f"{s.url}/search", json={"text": "green", "target": "light", "k": 2}, timeout=30).json()
        assert Path(hits[0]["path"]).name == "green-lamp.light" and hits[0]["modality"] == "light"
        assert hits[0]["thumbnail"] is None and hits[0]["metadata"]["rgb"] == list(PALETTE["green"])
        f = requests.get(f"{s.url}{hits[0]['file']}", timeout=30)
        assert f.headers["content-type"].startswith("text/csv") and f.text == "20,160,40"
        knn = requests.post(
            f"{s.url}/knn-service", json={"text": "red", "modality": "light", "num_images": 1}, timeout=30
        )
        assert Path(knn.json()[0]["image_path"]).name == "red-lamp.light"
    finally:
        s.stop()
