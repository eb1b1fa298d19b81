"""The reader stage: walk folders, find the files the modalities claim, and pair captions with their items."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.files import clamp_int64, file_version, printable_path, under
from mmsearch.modalities import Modality, all_modalities

CAPTION_EXT = ".txt"  # a.jpg + a.txt (or a.jpg.txt): the caption of a.jpg, not a note


@dataclass(frozen=True)
class Candidate:
    """A file the walk found, with what the store compares to decide whether it changed."""

    path: str
    modality: str
    size: int
    mtime_ns: int  # clamped to 64 bits (files.file_version)
    caption_path: str | None = None
    caption_sig: str | None = None
    inode: int | None = None


@dataclass
class WalkResult:
    candidates: list[Candidate] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # modality -> files the model cannot embed


def signature(st: os.stat_result) -> str:
    """``size:mtime_ns`` of a caption file: a changed caption re-embeds its item."""
    size, mtime_ns = file_version(st)
    return f"{size}:{mtime_ns}"


def walk(
    roots: Iterable[Path],
    modalities: Sequence[Modality],
    skip: Callable[[str, str], None],
    include_hidden: bool = False,
    follow_symlinks: bool = False,
    known: Sequence[Modality] = (),
) -> WalkResult:
    """Find the files ``modalities`` claim under ``roots`` (folders or single files).

    Hidden files and folders are left out unless ``include_hidden``; symlinks are not followed unless
    ``follow_symlinks``, and then only while they lead inside ``roots``, and every folder is entered once
    (no loops). A ``.txt`` named like an item of a modality that owns captions (``a.jpg`` + ``a.txt`` or
    ``a.jpg.txt``) is that item's caption. Files of ``known`` modalities the model cannot embed are
    counted in ``ignored``.
    """
    result = WalkResult()
    order = {m.name: i for i, m in enumerate(all_modalities())}  # registration order decides who claims what
    given = sorted([*modalities, *known], key=lambda m: order.get(m.name, len(order)))
    claims = [(m.name, m.extensions(), m.owns_caption) for m in given]
    wanted = {m.name for m in modalities}
    owners = {name for name, _, owns in claims if owns}
    visited: set[tuple[int, int]] = set()
    real_roots = [os.path.realpath(str(r)) for r in roots]

    def classify(name: str) -> str | None:  # the last registered claimant wins (video takes .webm from audio)
        ext = os.path.splitext(name)[1].lower()
        return next((m for m, exts, _ in reversed(claims) if ext in exts), None)

    def handle_dir_files(files: list[tuple[str, os.stat_result]]) -> None:
        names = {os.path.basename(p): (p, st) for p, st in files}
        media = {n for n in names if classify(n) in owners}  # items that can own a caption file
        captions: dict[str, tuple[str, os.stat_result]] = {}
        for n in names:
            if not n.lower().endswith(CAPTION_EXT):
                continue
            stem = n[: -len(CAPTION_EXT)]
            owner = stem if stem in media else next((i for i in sorted(media) if os.path.splitext(i)[0] == stem), None)
            if owner is not None and (owner not in captions or stem == owner):
                captions[owner] = names[n]
        caption_files = {p for p, _ in captions.values()}
        for n, (path, st) in names.items():
            modality = classify(n)
            if modality is None or path in caption_files:
                continue
            if modality not in wanted:
                result.ignored[modality] = result.ignored.get(modality, 0) + 1
                continue
            cap = captions.get(n)
            size, mtime_ns = file_version(st)
            result.candidates.append(
                Candidate(
                    path,
                    modality,
                    size,
                    mtime_ns,
                    cap[0] if cap else None,
                    signature(cap[1]) if cap else None,
                    clamp_int64(st.st_ino),
                )
            )

    def valid_name(path: str) -> bool:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            skip(printable_path(path), "file name is not valid UTF-8")
            return False
        return True

    def outside(entry: os.DirEntry[str]) -> bool:
        """A followed link whose target is not inside an indexed root (``notes.txt -> /etc/passwd``)."""
        if not entry.is_symlink():
            return False
        real = os.path.realpath(entry.path)
        if under(real, real_roots):
            return False
        reason = f"symbolic link leads outside the indexed folders (to {printable_path(real)})"
        skip(printable_path(entry.path), reason)
        return True

    stack: list[str] = []
    for root in roots:
        root_s = str(root)
        try:
            st = os.stat(root_s)
        except OSError as e:
            skip(root_s, f"cannot read: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(root_s)
        elif stat.S_ISREG(st.st_mode):
            # a single file: look at it beside its possible caption files, keep only it
            siblings = [(root_s, st)]
            for sib in (root_s + CAPTION_EXT, os.path.splitext(root_s)[0] + CAPTION_EXT):
                with contextlib.suppress(OSError):
                    siblings.append((sib, os.stat(sib)))
            before = len(result.candidates)
            handle_dir_files(siblings)
            result.candidates[before:] = [c for c in result.candidates[before:] if c.path == root_s]

    while stack:
        folder = stack.pop()
        try:
            dst = os.stat(folder)
            key = (dst.st_dev, dst.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            result.unreadable_dirs.append(folder)
            skip(printable_path(folder), f"cannot read folder: {e.strerror or e}")
            continue
        files: list[tuple[str, os.stat_result]] = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                # a .txt may be a caption even when no modality indexed here claims it
                claimed = classify(entry.name) is not None or entry.name.lower().endswith(CAPTION_EXT)
                if follow_symlinks and (claimed or entry.is_dir(follow_symlinks=True)) and outside(entry):
                    continue
                if entry.is_dir(follow_symlinks=follow_symlinks):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=follow_symlinks):
                    if claimed and valid_name(entry.path):
                        files.append((entry.path, entry.stat(follow_symlinks=follow_symlinks)))
                elif entry.is_symlink() and claimed:
                    skip(printable_path(entry.path), "broken symbolic link")
            except OSError as e:
                skip(printable_path(entry.path), f"cannot read: {e.strerror or e}")
        handle_dir_files(files)
    return result
