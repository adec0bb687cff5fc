"""The Unity package: its UPM structure, its generated codec, and its C# test suite run under mono.

``test_csharp_suite`` compiles the package with Debian mono's ``mcs -langversion:7.2`` and runs every NUnit test
through ``tests/unity/run.sh``, the end-to-end ones against the session's live server. mono must be installed
(``tests/unity/install.sh``); a missing tool fails, it never skips.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
import trustme

from npcserver.client import mint_player_token
from tests.unity import package_layout, wire_fixtures

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACKAGE = package_layout.PACKAGE
# Assemblies that Unity or its packages provide; everything else an asmdef references must be in this package.
UNITY_ASSEMBLIES = {"UnityEngine.UI": "com.unity.ugui", "UnityEngine.TestRunner": None, "UnityEditor.TestRunner": None}


class LiveServer(Protocol):
    """The part of conftest's live_server this module uses."""

    http_url: str


def load_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} must hold a JSON object"
    return data


def asmdefs() -> dict[Path, dict[str, object]]:
    found = {p: load_json(p) for p in PACKAGE.rglob("*.asmdef") if "~" not in str(p.relative_to(PACKAGE))}
    assert found, "the package has no asmdef"
    return found


def test_package_json_has_the_upm_fields() -> None:
    manifest = load_json(PACKAGE / "package.json")
    assert re.fullmatch(r"com\.[a-z0-9-]+(\.[a-z0-9-]+)+", str(manifest["name"])), "name must be reverse-DNS"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(manifest["version"])), "version must be SemVer"
    assert re.fullmatch(r"\d{4}\.\d", str(manifest["unity"])), "unity must be like 2021.3"
    for key in ("displayName", "description", "license", "author"):
        assert manifest.get(key), f"package.json lacks {key}"
    samples = manifest["samples"]
    assert isinstance(samples, list) and samples, "package.json declares no samples"
    for sample in samples:
        assert sample["displayName"] and sample["description"]
        path = PACKAGE / sample["path"]
        assert sample["path"].startswith("Samples~/") and path.is_dir(), f"sample path {sample['path']} missing"
        assert list(path.glob("*.cs")), f"sample {sample['path']} has no script"
    for required in ("Runtime", "Editor", "Tests/Runtime", "Tests/Editor", "Samples~", "Documentation~"):
        assert (PACKAGE / required).is_dir(), f"{required}/ missing"
    for required in ("README.md", "CHANGELOG.md", "LICENSE.md"):
        assert (PACKAGE / required).is_file(), f"{required} missing"
    assert "MIT License" in (PACKAGE / "LICENSE.md").read_text(encoding="utf-8")
    assert f"## [{manifest['version']}]" in (PACKAGE / "CHANGELOG.md").read_text(encoding="utf-8"), (
        "CHANGELOG.md has no entry for the package version"
    )


def test_every_asset_has_a_meta_and_no_meta_is_orphaned() -> None:
    missing = [
        str(p.relative_to(PACKAGE)) for p in package_layout.assets() if not p.with_name(p.name + ".meta").exists()
    ]
    assert not missing, f"assets without .meta (run python tests/unity/package_layout.py): {missing}"
    orphans = [
        str(m.relative_to(PACKAGE))
        for m in PACKAGE.rglob("*.meta")
        if not m.with_name(m.name[: -len(".meta")]).exists()
    ]
    assert not orphans, f".meta files whose asset is gone: {orphans}"
    stray = [
        str(m.relative_to(PACKAGE))
        for m in PACKAGE.rglob("*.meta")
        if not package_layout.needs_meta(m.with_name(m.name[: -len(".meta")]))
    ]
    assert not stray, f".meta files where Unity expects none (~ folders, Documentation~): {stray}"


def test_guids_are_well_formed_and_unique() -> None:
    seen: dict[str, str] = {}
    for meta in sorted(PACKAGE.rglob("*.meta")):
        guid = package_layout.read_guid(meta)
        rel = str(meta.relative_to(PACKAGE))
        assert guid is not None, f"{rel} has no 32-hex guid line"
        assert guid not in seen, f"{rel} reuses the guid of {seen[guid]}"
        seen[guid] = rel
    assert len(seen) >= len(package_layout.assets())


def test_meta_importers_match_the_asset_kind() -> None:
    for path in package_layout.assets():
        text = path.with_name(path.name + ".meta").read_text(encoding="utf-8")
        guid = package_layout.read_guid(path.with_name(path.name + ".meta"))
        assert guid is not None
        assert text == package_layout.meta_text(path, guid), f"{path.relative_to(PACKAGE)}.meta has a wrong importer"


def test_asmdef_references_resolve() -> None:
    defs = asmdefs()
    names = {str(d["name"]) for d in defs.values()}
    assert len(names) == len(defs), "two asmdefs share a name"
    dependencies = load_json(PACKAGE / "package.json").get("dependencies", {})
    assert isinstance(dependencies, dict)
    for path, data in defs.items():
        assert data["name"] == path.stem, f"{path.name}: asmdef name should match its file name"
        references = data.get("references", [])
        assert isinstance(references, list)
        for ref in references:
            if ref in names:
                continue
            assert ref in UNITY_ASSEMBLIES, f"{path.name} references unknown assembly {ref}"
            package = UNITY_ASSEMBLIES[ref]
            assert package is None or package in dependencies, f"{ref} needs {package} in package.json dependencies"
        precompiled = data.get("precompiledReferences", [])
        assert isinstance(precompiled, list)
        for dll in precompiled:
            assert dll == "nunit.framework.dll", f"{path.name}: the package ships no DLLs, but references {dll}"
    core = defs[PACKAGE / "Runtime/Core/NpcServer.Dialogue.Core.asmdef"]
    assert core["noEngineReferences"] is True and core["references"] == []
    editor_only = [d for d in defs.values() if d.get("includePlatforms") == ["Editor"]]
    assert {str(d["name"]) for d in editor_only} == {"NpcServer.Dialogue.Editor", "NpcServer.Dialogue.EditorTests"}


def test_package_ships_no_binaries_and_core_never_touches_the_engine() -> None:
    binaries = [
        p for p in PACKAGE.rglob("*") if p.suffix.lower() in {".dll", ".so", ".dylib", ".a", ".bundle", ".jslib"}
    ]
    assert not binaries, f"the package must not ship native or managed binaries: {binaries}"
    for source in (PACKAGE / "Runtime/Core").rglob("*.cs"):
        assert "UnityEngine" not in source.read_text(encoding="utf-8"), f"{source.name} in the core uses UnityEngine"


def test_sample_settings_asset_points_at_the_settings_script() -> None:
    asset = (PACKAGE / "Samples~/TavernKeeper/TavernKeeperSettings.asset").read_text(encoding="utf-8")
    match = re.search(r"m_Script: \{fileID: 11500000, guid: ([0-9a-f]{32}), type: 3\}", asset)
    assert match, "the sample settings asset has no script reference"
    script_meta = PACKAGE / "Runtime/Unity/NpcConnectionSettings.cs.meta"
    assert package_layout.read_guid(script_meta) == match.group(1), "sample asset points at the wrong script guid"
    fields = set(re.findall(r"^\s+(\w+):", asset, re.MULTILINE))
    source = (PACKAGE / "Runtime/Unity/NpcConnectionSettings.cs").read_text(encoding="utf-8")
    for field in ("serverUrl", "apiKey", "timeoutSeconds"):
        assert field in fields and re.search(rf"\b{field} =", source), f"serialized field {field} out of sync"


def test_generated_csharp_codec_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/gen_csharp.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def count_tests(*folders: Path) -> int:
    return sum(
        len(re.findall(r"^\s*\[Test\]", p.read_text(encoding="utf-8"), re.MULTILINE))
        for folder in folders
        for p in folder.rglob("*.cs")
    )


@pytest.mark.timeout(600)
def test_csharp_suite(live_server: LiveServer, server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    """Compiles with mcs 7.2 and runs every NUnit test (end to end against live_server); all must pass."""
    api_key = "unity-test-key-" + secrets.token_hex(8)
    token_secret = secrets.token_urlsafe(48)
    # The keyed server also speaks TLS, with a certificate from a throwaway CA; the C# tests pin that certificate.
    # RSA: mono's TLS stack cannot read an EC public key ("unknown OID 1.2.840.10045.2.1").
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    keyed = server_factory(
        NPCSERVER_API_KEY=api_key,
        NPCSERVER_PLAYER_TOKEN_SECRET=token_secret,
        NPCSERVER_TLS_CERT_FILE=str(tmp_path / "cert.pem"),
        NPCSERVER_TLS_KEY_FILE=str(tmp_path / "key.pem"),
    )
    env = dict(os.environ)
    env["NPCSERVER_HTTP_URL"] = live_server.http_url
    env["NPCSERVER_KEYED_HTTP_URL"] = keyed.http_url
    env["NPCSERVER_KEYED_API_KEY"] = api_key
    env["NPCSERVER_KEYED_CERT_PEM"] = str(tmp_path / "cert.pem")
    env["NPCSERVER_KEYED_PLAYER_TOKEN"] = mint_player_token(token_secret, "unity-player", "unity-player:", ttl=900)
    env["UNITY_TEST_BUILD"] = str(tmp_path)
    env["PYTHON"] = sys.executable
    result = subprocess.run(
        ["bash", str(HERE / "run.sh")], capture_output=True, text=True, env=env, cwd=REPO, timeout=540
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output[-6000:]
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert summary, "run.sh printed no summary"
    passed, failed = (int(n) for n in summary[-1])
    expected = count_tests(PACKAGE / "Tests", HERE / "interop", HERE / "transport", HERE / "e2e")
    assert (passed, failed) == (expected, 0), f"expected all {expected} [Test]s to run and pass"
    wire_total = len(wire_fixtures.fixtures())
    assert f"wire interop (C# -> Python): {wire_total} passed, 0 failed" in result.stdout
