"""The layout holds: the import graph has the direction docs/architecture.md draws, and the façade holds
no per-modality branches."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "mmsearch"
MODALITY_NAMES = {"image", "text", "audio", "video"}
MODALITY_CONSTANTS = {"IMAGE", "TEXT", "AUDIO", "VIDEO"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def modules(under: str) -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py")) if (PACKAGE / under).is_dir() else [PACKAGE / f"{under}.py"]


def test_the_search_side_never_imports_the_ingest_side() -> None:
    for path in modules("search"):
        bad = {m for m in imports_of(path) if m == "mmsearch.ingest" or m.startswith("mmsearch.ingest.")}
        assert not bad, (path, bad)


def test_encoders_never_import_upward_into_training_search_or_ingest() -> None:
    for path in modules("encoders"):
        bad = {m for m in imports_of(path) if m.startswith(("mmsearch.training", "mmsearch.search", "mmsearch.ingest"))}
        assert not bad, (path, bad)


def test_the_store_knows_records_not_modalities_and_the_library_never_imports_the_cli() -> None:
    for path in modules("store"):
        bad = {
            m for m in imports_of(path) if m.startswith(("mmsearch.modalities", "mmsearch.search", "mmsearch.ingest"))
        }
        assert not bad, (path, bad)
    for path in sorted(PACKAGE.rglob("*.py")):
        assert not any(m.startswith("mmsearch.cli") for m in imports_of(path)), path


def test_the_engine_holds_no_image_text_or_audio_branches() -> None:
    tree = ast.parse((PACKAGE / "engine.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                assert not (isinstance(side, ast.Constant) and side.value in MODALITY_NAMES), ast.unparse(node)
                assert not (isinstance(side, ast.Name) and side.id in MODALITY_CONSTANTS), ast.unparse(node)
        if isinstance(node, ast.ImportFrom) and node.module == "mmsearch.encoders":
            assert not {a.name for a in node.names} & MODALITY_CONSTANTS, ast.unparse(node)
    lines = len((PACKAGE / "engine.py").read_text(encoding="utf-8").splitlines())
    assert lines <= 270, lines  # a façade: the pipelines, the store and the FAISS cache do the work


def test_no_caller_probes_encoders_for_what_they_declare() -> None:
    declared = {"image_size", "audio_sample_rate", "feature_dims", "unfreezable", "encode_audio", "encode_image",
                "encode_text", "image_features", "audio_features", "trainable_tail"}  # fmt: skip
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
            ):
                args = node.args
                if len(args) >= 2 and isinstance(args[1], ast.Constant) and args[1].value in declared:
                    raise AssertionError(f"{path}: {ast.unparse(node)}")
