"""A generated corpus of hostile files: what photo folders really hold, and what breaks indexers.

``make_corpus(root)`` writes it and returns, for every case, what an index run must do with it:
``Expect("skip", words)`` (one ``skipping PATH: reason`` line, the reason containing ``words``),
``Expect("index")`` (indexed, with a check on what was stored), or ``Expect("absent")`` (neither
indexed nor reported: symlinks not followed, hidden files, pipes). Two cases need the run itself to
misbehave (a file changing while read, a folder removed mid-run); ``Sabotage`` says which.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

DATA = Path(__file__).parent / "data"
RED, BLUE, GREEN = (220, 20, 20), (20, 40, 220), (20, 160, 40)


@dataclass
class Expect:
    what: str  # "skip" | "index" | "absent"
    reason: str = ""  # for skips: words the reason must contain
    size: tuple[int, int] | None = None  # for indexed images: the upright size stored
    colour: str | None = None  # for indexed images: the palette colour the fake model must find it by
    words: str | None = None  # for indexed notes: words their excerpt must hold


@dataclass
class Sabotage:
    changing: Path  # grows while ingest reads it
    vanishing: Path  # a folder removed between the walk and the reads
    unreadable: Path  # open() refuses it (chmod does not stop root, who runs the tests here)


@dataclass
class Corpus:
    expect: dict[str, Expect] = field(default_factory=dict)  # relative path -> expectation
    sabotage: Sabotage | None = None


def _pic(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(sum(colour) + size[0])
    arr = np.clip(np.array(colour)[None, None] + rng.integers(-6, 7, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def _bytes(im: Image.Image, fmt: str, **opts: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **opts)
    return buf.getvalue()


def make_corpus(root: Path) -> Corpus:
    root.mkdir(parents=True)
    c = Corpus()
    e = c.expect

    def put(rel: str, data: bytes, expect: Expect) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        e[rel] = expect
        return path

    # -- images that must be skipped -----------------------------------------------------------
    put("zero.jpg", b"", Expect("skip", "empty file"))
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tif")):
        data = _bytes(_pic(RED, (300, 200)), fmt)
        put(f"truncated.{ext}", data[: len(data) // 2], Expect("skip", "broken image"))
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, format="PNG")  # 900 megapixels in ~100 KB
    put("bomb.png", bomb.getvalue(), Expect("skip", "too large"))
    header = bytearray(_bytes(Image.new("RGB", (16, 16)), "JPEG"))
    sof = header.index(b"\xff\xc0")
    header[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # a tiny file claiming 3.6 gigapixels
    put("bomb-header.jpg", bytes(header), Expect("skip", "too large"))
    put("page.jpg", b"<!doctype html><html><body>404 not found</body></html>", Expect("skip", "not a readable image"))
    put("note.png", b"just some words, not a picture\n", Expect("skip", "not a readable image"))
    put("garbage.webp", np.random.default_rng(1).bytes(5000), Expect("skip", "not a readable image"))

    # -- images that must be indexed, and indexed right ---------------------------------------
    put("png-named.jpg", _bytes(_pic(RED), "PNG"), Expect("index", colour="red"))
    put("jpeg-named.png", _bytes(_pic(BLUE), "JPEG"), Expect("index", colour="blue"))
    put("cmyk.jpg", _bytes(_pic(BLUE).convert("CMYK"), "JPEG"), Expect("index", colour="blue"))
    grey16 = Image.fromarray((np.ones((30, 40)) * 60000).astype(np.uint16))
    put("grey16.png", _bytes(grey16, "PNG"), Expect("index", size=(40, 30), colour="white"))
    pal = _pic(GREEN).convert("P")
    put("palette-transparent.png", _bytes(pal, "PNG", transparency=0), Expect("index", colour="green"))
    put("rgba.png", _bytes(_pic(RED).convert("RGBA"), "PNG"), Expect("index", colour="red"))
    put("one-bit.png", _bytes(Image.new("1", (20, 20), 1), "PNG"), Expect("index", colour="white"))
    put("one-pixel.png", _bytes(Image.new("RGB", (1, 1), GREEN), "PNG"), Expect("index", size=(1, 1)))
    put("panorama.jpg", _bytes(_pic(BLUE, (6000, 3)), "JPEG"), Expect("index", size=(6000, 3)))
    for orientation, stored, upright in ((6, (60, 40), (40, 60)), (8, (60, 40), (40, 60)), (3, (60, 40), (60, 40))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = _bytes(_pic(GREEN, stored), "JPEG", exif=exif.tobytes())
        put(f"rotated-{orientation}.jpg", data, Expect("index", size=upright))
    bad_exif = bytearray(_bytes(_pic(RED), "JPEG", exif=Image.Exif().tobytes() + b"\x00" * 8))
    app1 = bad_exif.find(b"Exif\x00\x00")
    if app1 > 0:
        bad_exif[app1 + 6 : app1 + 14] = b"MM\x00\x2a\xff\xff\xff\xff"  # IFD offset far past the end
    put("broken-exif.jpg", bytes(bad_exif), Expect("index", colour="red"))
    frames = [Image.new("RGB", (20, 20), col) for col in (RED, BLUE, BLUE)]
    anim = io.BytesIO()
    frames[0].save(anim, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.gif", anim.getvalue(), Expect("index", colour="red"))  # its first frame
    pages = io.BytesIO()
    _pic(GREEN).save(pages, format="TIFF", save_all=True, append_images=[_pic(RED)])
    put("two-pages.tif", pages.getvalue(), Expect("index", colour="green"))
    put("album.jpg/inside.png", _bytes(_pic(GREEN), "PNG"), Expect("index", colour="green"))  # a folder named .jpg
    long_name = "l" * 240 + ".png"
    put(long_name, _bytes(_pic(RED), "PNG"), Expect("index", colour="red"))
    deep = "/".join(["d" * 200] * 19)  # ~3.8 KB of path: under PATH_MAX, over most tools' patience
    put(f"{deep}/deep.png", _bytes(_pic(BLUE), "PNG"), Expect("index", colour="blue"))
    put("photo-with-binary-caption.jpg", _bytes(_pic(GREEN), "JPEG"), Expect("index", colour="green"))
    (root / "photo-with-binary-caption.txt").write_bytes(b"\x00\x01binary\x00")  # ignored as a caption

    # -- names and links ----------------------------------------------------------------------
    bad_name = os.fsencode(root) + b"/caf\xe9-latin1-name.jpg"
    with open(bad_name, "wb") as f:
        f.write(_bytes(_pic(RED), "JPEG"))
    e["caf\\xe9-latin1-name.jpg"] = Expect("skip", "not valid UTF-8")  # as the skip line prints it
    # a folder deeper than PATH_MAX: made relative to its parent, since its full name cannot be used
    too_deep = root / "too-deep"
    too_deep.mkdir()
    fd = os.open(too_deep, os.O_RDONLY)
    try:
        for _ in range(22):  # 22 x 200 bytes > 4096
            os.mkdir("e" * 199, dir_fd=fd)
            nfd = os.open("e" * 199, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        pfd = os.open("lost.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(pfd, _bytes(_pic(RED), "PNG"))
        os.close(pfd)
    finally:
        os.close(fd)
    e["too-deep"] = Expect("skip", "name too long")  # reported at the first folder whose name is too long
    os.symlink(root, root / "loop")  # a folder link back to the root
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    _pic(RED).save(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "link-out.png")
    os.symlink(outside, root / "linked-folder")
    os.symlink(root / "no-such-file.png", root / "dangling.png")
    os.mkfifo(root / "pipe.jpg")  # opening it for reading would block forever
    _pic(RED).save(root / ".hidden.png")
    for rel in ("loop", "link-out.png", "linked-folder", "dangling.png", "pipe.jpg", ".hidden.png"):
        e[rel] = Expect("absent")

    # -- notes --------------------------------------------------------------------------------
    put("empty.txt", b"", Expect("skip", "empty"))
    put("blank.md", b"  \n\t\n", Expect("skip", "empty"))
    put("binary.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00", Expect("skip", "binary"))
    put("latin1.txt", "café crème brûlée".encode("latin-1"), Expect("index", words="café crème brûlée"))
    put("utf16.txt", "\ufeffnotes written by Notepad".encode("utf-16-le"), Expect("index", words="by Notepad"))
    put("huge.md", b"word " * 700_000, Expect("index", words="word word"))  # 3.5 MB: the first MiB is embedded

    # -- sounds -------------------------------------------------------------------------------
    speech = (DATA / "speech" / "garden.ogg").read_bytes()
    put("zero.wav", b"", Expect("skip", "empty file"))
    put("cut-short.ogg", speech[:3000], Expect("skip", "audio"))
    put("text.wav", b"hello, I am a text file\n", Expect("skip", "not audio"))
    put("picture.mp3", _bytes(_pic(RED), "PNG"), Expect("skip", "not audio"))
    wav = io.BytesIO()
    sf.write(wav, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    put("no-samples.wav", wav.getvalue(), Expect("skip", "audio"))
    put("speech.ogg", speech, Expect("index"))

    # -- the run itself misbehaves --------------------------------------------------------------
    changing = put("changing.jpg", _bytes(_pic(BLUE), "JPEG"), Expect("skip", "changed while being read"))
    vanishing = root / "vanishing"
    for i in range(2):
        put(f"vanishing/gone{i}.png", _bytes(_pic(GREEN), "PNG"), Expect("skip", "No such file"))
    unreadable = put("unreadable.jpg", _bytes(_pic(RED), "JPEG"), Expect("skip", "Permission denied"))
    c.sabotage = Sabotage(changing, vanishing, unreadable)
    return c
