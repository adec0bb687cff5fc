"""The folder layout is the architecture: doors import no engine, the service layer imports no transport."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "npcserver"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute (``from . import x`` resolved against the file's package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    return bad


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_no_door_imports_the_engine(door: str) -> None:
    assert offenders(door, ("npcserver.engine",)) == []


def test_the_service_layer_imports_no_transport() -> None:
    forbidden = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "npcserver.api", "npcserver.grpc",
                 "npcserver.http", "starlette", "uvicorn", "httpx", "npcserver.engine")  # fmt: skip
    assert offenders("service", forbidden) == []


def test_the_check_sees_imports() -> None:
    # The checker itself must catch each import form, or the tests above could never fail.
    sample = PACKAGE / "grpc" / "servicers.py"
    modules = imported_modules(sample)
    assert "grpc" in modules and "npcserver.service" in modules and "npcserver.grpc.convert" in modules
