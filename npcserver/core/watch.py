"""Persona files and the presets file, applied when saved (hot reload), and the rule between files and the API.

The rule:

- A persona file (``<personas_dir>/*.toml``) defines its persona. The persona is written to the store (so every
  conversation has its persona row, and other replicas see it) with ``source`` set to the file's path; the API
  refuses to change or delete it (``ManagedByFile``: FAILED_PRECONDITION / HTTP 409) and names the file to edit.
- A saved file applies to the next line: the watcher reloads it within a fraction of a second.
- A file that does not load (bad TOML, unknown preset, a schema that does not compile, an id another file owns)
  keeps the last good version live; the error goes to the log and to the persona's ``load_error``.
- A file that appears for a persona created through the API wins. The API's version is kept inside the file
  persona's stored body (``shadowed``), with a warning in the log, and comes back if the file goes away.
- A file that goes away (deleted, renamed, or gone while the server was down) releases its persona: the API's
  earlier version comes back if the file had shadowed one, otherwise the persona stays as it was, now editable
  through the API. Its conversations are kept either way; DeletePersona deletes them.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchfiles import awatch

from npcserver.core import personas as rules
from npcserver.errors import NpcError

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

log = logging.getLogger(__name__)

#: Milliseconds of quiet before a burst of file events applies: an editor's save is several events.
DEBOUNCE_MS = 150
PAGE = 500


class PersonaFiles:
    """Loads a folder of persona files (and the presets file) into a core's store, and keeps them applied."""

    def __init__(self, core: NpcCore, folder: Path | None, presets_file: Path | None = None) -> None:
        self.core = core
        self.folder = folder.resolve() if folder is not None else None
        self.presets_file = presets_file.resolve() if presets_file is not None else None
        #: The persona id each file's last good version defined, to find it again when the file breaks or goes.
        self._ids: dict[Path, str] = {}
        # One file operation at a time: a save and a presets reload must not interleave their store writes.
        self._lock = asyncio.Lock()

    # --- loading ---------------------------------------------------------------------------------------------------

    async def sync_all(self) -> int:
        """Applies every persona file, and releases personas whose file is gone. Returns how many files loaded."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        files = await asyncio.to_thread(rules.persona_files, self.folder)
        loaded = 0
        for path in files:
            loaded += await self.apply(path)
        present = {str(p) for p in files}
        for persona_id, source in await self._file_personas():
            if source not in present:
                async with self._lock:
                    await self._release(Path(source), persona_id)
        return loaded

    async def apply(self, path: Path) -> bool:
        """Applies one persona file as it is now (changed, new or deleted). Returns whether a good version loaded."""
        async with self._lock:
            if not await asyncio.to_thread(path.is_file):
                await self._release(path, self._ids.pop(path, "") or path.stem)
                return False
            try:
                persona = await asyncio.to_thread(rules.load_persona_file, path)
                await self.core.validate_persona(persona)
            except (OSError, tomllib.TOMLDecodeError, NpcError) as exc:
                text = exc.message if isinstance(exc, NpcError) else str(exc)
                await self._failed(path, text if str(path) in text else f"{path}: {text}")
                return False
            return await self._store(path, persona)

    async def reload_presets(self) -> None:
        """Reads the presets file again; then every persona file, since their presets may have come or gone."""
        try:
            await asyncio.to_thread(self.core.presets.reload)
            log.info("presets file %s applied: %s", self.presets_file, ", ".join(self.core.presets.names()))
        except (OSError, ValueError) as exc:
            log.error("presets file %s not applied (the last good presets stay in use): %s", self.presets_file, exc)
            return
        await self.sync_all()

    async def _failed(self, path: Path, message: str) -> None:
        persona_id = self._ids.get(path) or path.stem
        body = await self._get(persona_id)
        if body is None or body.get("source") != str(path):
            log.error("persona file not loaded (no earlier version of it is live): %s", message)
            return
        log.error("persona file not loaded; its last good version stays live: %s", message)
        body["load_error"] = message
        await asyncio.to_thread(self.core.store.put_persona, persona_id, body, mode="upsert")

    async def _store(self, path: Path, persona: Any) -> bool:
        body = rules.persona_to_dict(persona)
        previous_id = self._ids.get(path)
        if previous_id is not None and previous_id != persona.id:
            await self._release(path, previous_id)  # the file now defines another id
        stored = await self._get(persona.id)
        if stored is not None:
            owner = str(stored.get("source") or "")
            if owner and owner != str(path) and await asyncio.to_thread(Path(owner).is_file):
                log.error("persona file %s not loaded: persona id %r is already defined by %s", path, persona.id, owner)
                return False
            if not owner:
                log.warning(
                    "persona file %s takes over persona %r that was created through the API; the API's version is "
                    "kept and comes back if the file is removed",
                    path,
                    persona.id,
                )
                body["shadowed"] = stored
            elif "shadowed" in stored:
                body["shadowed"] = stored["shadowed"]
        await asyncio.to_thread(self.core.store.put_persona, persona.id, body, mode="upsert")
        if stored is not None and stored.get("source") == str(path):
            log.info("persona file %s applied (persona %r)", path, persona.id)
        self._ids[path] = persona.id
        return True

    async def _release(self, path: Path, persona_id: str) -> None:
        body = await self._get(persona_id)
        if body is None or body.get("source") != str(path):
            return
        shadowed = body.get("shadowed")
        if isinstance(shadowed, dict):
            log.warning("persona file %s is gone: persona %r is the API's version again", path, persona_id)
            body = shadowed
        else:
            log.warning(
                "persona file %s is gone: persona %r stays as it was and can now be edited through the API "
                "(DeletePersona removes it and its conversations)",
                path,
                persona_id,
            )
            body = {k: v for k, v in body.items() if k not in ("source", "load_error")}
        await asyncio.to_thread(self.core.store.put_persona, persona_id, body, mode="upsert")

    async def _get(self, persona_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.core.store.get_persona, persona_id)

    async def _file_personas(self) -> list[tuple[str, str]]:
        """(id, source) of every stored persona that came from a file in this folder."""
        found: list[tuple[str, str]] = []
        after = ""
        while True:
            rows = await asyncio.to_thread(self.core.store.list_personas, after, PAGE)
            for row in rows:
                source = str(row.get("source") or "")
                if source and self.folder is not None and Path(source).parent == self.folder:
                    found.append((str(row["id"]), source))
            if len(rows) < PAGE:
                return found
            after = str(rows[-1]["id"])

    # --- watching --------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Applies saved changes until ``stop`` is set. Errors are logged; they never stop the watcher."""
        roots = []
        if self.folder is not None and self.folder.is_dir():
            roots.append(self.folder)
        if self.presets_file is not None and self.presets_file.parent.is_dir():
            # The folder, not the file: editors save by replacing the file, which ends a watch on the file itself.
            roots.append(self.presets_file.parent)
        if not roots:
            return
        log.info("watching %s for persona and presets changes", ", ".join(map(str, dict.fromkeys(roots))))
        async for changes in awatch(
            *dict.fromkeys(roots), stop_event=stop, debounce=DEBOUNCE_MS, step=25, recursive=False
        ):
            try:
                await self._changed({Path(p) for _, p in changes})
            except Exception:
                log.exception("applying persona or presets changes failed")

    async def _changed(self, paths: set[Path]) -> None:
        if self.presets_file is not None and self.presets_file in paths:
            await self.reload_presets()
            return
        for path in sorted(paths):
            if path.parent == self.folder and path.suffix == ".toml":
                await self.apply(path)
