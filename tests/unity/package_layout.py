"""The Unity package's layout rules, shared by the structure test and the .meta writer.

Unity imports a package read-only, so every asset needs a committed ``.meta`` with a GUID: without one, Unity
ignores the asset. Folders whose name ends in ``~`` (Samples~, Documentation~) are not imported; samples are copied
into the project on demand, so their files get ``.meta`` files too (stable GUIDs for the sample's asset
references), while Documentation~ gets none.

Run ``python tests/unity/package_layout.py`` to write a ``.meta`` (with a fresh random GUID) for each new asset.
Existing ``.meta`` files are never rewritten, so GUIDs stay stable.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "unity_package"
GUID = re.compile(r"^guid: ([0-9a-f]{32})$", re.MULTILINE)

_TAIL = "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
_IMPORTERS = {
    ".cs": "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n"
    "  executionOrder: 0\n  icon: {instanceID: 0}\n",
    ".asmdef": "AssemblyDefinitionImporter:\n  externalObjects: {}\n",
    ".md": "TextScriptImporter:\n  externalObjects: {}\n",
    ".json": "TextScriptImporter:\n  externalObjects: {}\n",
    ".asset": "NativeFormatImporter:\n  externalObjects: {}\n  mainObjectFileID: 11400000\n",
}


def needs_meta(path: Path) -> bool:
    """Whether Unity needs a .meta next to this file or folder (path inside the package)."""
    rel = path.relative_to(PACKAGE)
    if path.name.endswith(".meta") or any(part.startswith(".") for part in rel.parts):
        return False
    if path.name.endswith("~"):
        return False  # the ~ folder itself is never imported
    return "Documentation~" not in rel.parts


def assets() -> list[Path]:
    """Every file and folder of the package that must have a .meta."""
    return sorted(p for p in PACKAGE.rglob("*") if needs_meta(p))


def meta_text(path: Path, guid: str) -> str:
    """The .meta Unity itself would write for this asset."""
    head = f"fileFormatVersion: 2\nguid: {guid}\n"
    if path.is_dir():
        return head + "folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n" + _TAIL
    if path.name == "package.json":
        return head + "PackageManifestImporter:\n  externalObjects: {}\n" + _TAIL
    importer = _IMPORTERS.get(path.suffix, "DefaultImporter:\n  externalObjects: {}\n")
    return head + importer + _TAIL


def read_guid(meta: Path) -> str | None:
    """The GUID in a .meta file, or None when it has no well-formed one."""
    match = GUID.search(meta.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def write_missing_metas() -> list[Path]:
    """Writes a .meta with a new random GUID for each asset that lacks one; returns the files written."""
    written = []
    for path in assets():
        meta = path.with_name(path.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(path, uuid.uuid4().hex), encoding="utf-8", newline="\n")
            written.append(meta)
    return written


def main() -> int:
    for meta in write_missing_metas():
        print(f"wrote {meta.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
