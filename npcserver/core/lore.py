"""Lore: what an NPC knows about its world, brought into the prompt when the conversation comes to it.

The semantics are SillyTavern's world info and the character card's ``character_book``: an entry enters the prompt
when one of its ``keys`` appears in the player's line or the last ``scan_depth`` turns (case-insensitive unless the
entry or book says otherwise). With ``selective``, its ``secondary_keys`` must also agree, by ``selective_logic``:
``and_any`` (one of them appears), ``and_all`` (all appear), ``not_any`` (none appears), ``not_all`` (not all appear).
A ``constant`` entry is always in. Entries are shown in ``insertion_order`` (lower first). When the matched entries
of a book exceed its ``token_budget``, the lowest ``priority`` ones are dropped first (constant entries are kept:
a book whose constant entries alone exceed its budget is refused).

A book belongs to the personas it names: one persona (its own lore) or several (a shared world: the whole village
knows about the wolves). Constant entries are the stable part and go first in the prompt, before the persona, so
every NPC of a world shares that prefix; matched entries are per line and go after the history. An imported card's
``character_book`` is a book of that persona alone.

Books come from designer files (``<lore_dir>/*.toml``, reloaded when saved) and from the API (kept in the store).
"""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from watchfiles import awatch

from npcserver.core.personas import LINE_BREAKS
from npcserver.errors import InvalidArgument, NpcError

log = logging.getLogger(__name__)

SelectiveLogic = Literal["and_any", "not_all", "not_any", "and_all"]
LOGICS: tuple[SelectiveLogic, ...] = ("and_any", "not_all", "not_any", "and_all")  # SillyTavern's 0..3

#: Limits that keep one book's selection cheap and its file or request small.
MAX_ENTRIES = 5000
MAX_ENTRY_CHARS = 4000
MAX_KEYS = 32
MAX_KEY_CHARS = 200
MAX_BOOK_CHARS = 2_000_000
MAX_PERSONAS = 256
MAX_SCAN_DEPTH = 100
DEFAULT_TOKEN_BUDGET = 256
DEFAULT_SCAN_DEPTH = 2

BOOK_ID = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")


@dataclass(frozen=True)
class LoreEntry:
    """One piece of lore and when it applies."""

    content: str
    keys: tuple[str, ...] = ()
    secondary_keys: tuple[str, ...] = ()
    selective: bool = False
    selective_logic: SelectiveLogic = "and_any"
    constant: bool = False
    enabled: bool = True
    insertion_order: int = 100
    #: Budget order: the lowest priority is dropped first.
    priority: int = 100
    #: None: the book's setting.
    case_sensitive: bool | None = None
    name: str = ""


@dataclass(frozen=True)
class LoreBook:
    """A set of entries, the personas that know them, and how much of the prompt they may take."""

    id: str
    personas: tuple[str, ...]
    entries: tuple[LoreEntry, ...] = ()
    name: str = ""
    token_budget: int = DEFAULT_TOKEN_BUDGET
    scan_depth: int = DEFAULT_SCAN_DEPTH
    case_sensitive: bool = False
    #: The file it comes from ("" for the API's and a card's).
    source: str = ""
    #: Lowercased keys of each entry, prepared once (matching runs on every line).
    _prepared: tuple[tuple[tuple[str, ...], tuple[str, ...], bool], ...] = field(default=(), repr=False, compare=False)

    @property
    def shared(self) -> bool:
        return len(self.personas) > 1


def _strings(value: Any, where: str, *, limit: int, chars: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where} must be a list of strings", param="lore")
    if len(value) > limit:
        raise InvalidArgument(f"{where} has {len(value)} items; the limit is {limit}", param="lore")
    out = []
    for i, v in enumerate(value):
        if len(v) > chars:
            raise InvalidArgument(f"{where}[{i}] has {len(v)} characters; the limit is {chars}", param="lore")
        if v.strip():
            out.append(v.strip())
    return tuple(out)


def _int(value: Any, where: str, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{where} must be a whole number from {lo} to {hi}, not {value!r}", param="lore")
    return value


def _bool(value: Any, where: str, default: bool | None) -> bool | None:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where} must be true or false, not {value!r}", param="lore")
    return value


_ENTRY_FIELDS = {
    "content",
    "keys",
    "key",
    "secondary_keys",
    "keysecondary",
    "selective",
    "selective_logic",
    "selectiveLogic",
    "constant",
    "enabled",
    "insertion_order",
    "order",
    "priority",
    "case_sensitive",
    "name",
    "comment",
    "id",
    "uid",
    "extensions",
    "position",
    "disable",
}


def parse_entry(raw: Any, where: str, *, strict: bool = True) -> LoreEntry:
    """An entry from its dict form (a lore file's ``[[entries]]``, the API's JSON, or a card's book entry)."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where} must be an object with keys and content", param="lore")
    if strict:
        unknown = sorted(set(raw) - _ENTRY_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"{where} has unknown field(s) {', '.join(unknown)}; an entry has content, keys, secondary_keys, "
                "selective, selective_logic, constant, enabled, insertion_order, priority, case_sensitive, name",
                param="lore",
            )
    content = raw.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidArgument(f"{where}.content is empty: an entry needs the text to put in the prompt", param="lore")
    if len(content) > MAX_ENTRY_CHARS:
        raise InvalidArgument(
            f"{where}.content has {len(content)} characters; the limit is {MAX_ENTRY_CHARS}", param="lore"
        )
    keys = _strings(raw.get("keys", raw.get("key")), f"{where}.keys", limit=MAX_KEYS, chars=MAX_KEY_CHARS)
    secondary = _strings(
        raw.get("secondary_keys", raw.get("keysecondary")),
        f"{where}.secondary_keys",
        limit=MAX_KEYS,
        chars=MAX_KEY_CHARS,
    )
    constant = bool(_bool(raw.get("constant"), f"{where}.constant", False))
    if not keys and not constant:
        raise InvalidArgument(
            f"{where} has no keys: give it keys that bring it into the prompt, or make it constant", param="lore"
        )
    logic = raw.get("selective_logic", raw.get("selectiveLogic", "and_any"))
    if isinstance(logic, int) and not isinstance(logic, bool) and 0 <= logic < len(LOGICS):
        logic = LOGICS[logic]
    if logic not in LOGICS:
        raise InvalidArgument(f"{where}.selective_logic is {logic!r}; use one of {', '.join(LOGICS)}", param="lore")
    enabled = _bool(raw.get("enabled"), f"{where}.enabled", True)
    if raw.get("disable") is True:  # SillyTavern's own export says "disable"
        enabled = False
    name = raw.get("name", raw.get("comment", ""))
    return LoreEntry(
        content=content.strip(),
        keys=keys,
        secondary_keys=secondary,
        selective=bool(_bool(raw.get("selective"), f"{where}.selective", bool(secondary))),
        selective_logic=logic,
        constant=constant,
        enabled=bool(enabled),
        insertion_order=_int(
            raw.get("insertion_order", raw.get("order")), f"{where}.insertion_order", 100, -(10**9), 10**9
        ),
        priority=_int(raw.get("priority"), f"{where}.priority", 100, -(10**9), 10**9),
        case_sensitive=_bool(raw.get("case_sensitive"), f"{where}.case_sensitive", None),
        name=name if isinstance(name, str) else "",
    )


def check_book_id(book_id: str, param: str = "lore_book_id") -> None:
    if not BOOK_ID.match(book_id):
        raise InvalidArgument(
            f"{param} {book_id!r} is invalid: use 1-64 lowercase letters, digits, '_' or '-', starting with a letter "
            "(for example 'millbrook')",
            param=param,
        )


def parse_book(raw: Mapping[str, Any], *, book_id: str = "", source: str = "") -> LoreBook:
    """A book from its dict form: ``id``, ``personas``, ``token_budget``, ``scan_depth``, ``case_sensitive``,
    ``name`` and ``entries``. Everything is checked; a bad book raises InvalidArgument naming the field."""
    known = {"id", "name", "personas", "token_budget", "scan_depth", "case_sensitive", "entries", "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidArgument(
            f"lore book has unknown field(s) {', '.join(unknown)}; a book has id, name, personas, token_budget, "
            "scan_depth, case_sensitive, entries",
            param="lore",
        )
    bid = raw.get("id") or book_id
    if not isinstance(bid, str):
        raise InvalidArgument("lore book id must be a string", param="lore")
    check_book_id(bid, "lore book id")
    personas = _strings(raw.get("personas"), "personas", limit=MAX_PERSONAS, chars=64)
    if not personas:
        raise InvalidArgument(
            f"lore book {bid!r} names no personas: list the persona ids that know it in 'personas'", param="lore"
        )
    for p in personas:
        from npcserver.core.personas import check_persona_id

        check_persona_id(p, param="personas")
    entries_raw = raw.get("entries", [])
    if not isinstance(entries_raw, list):
        raise InvalidArgument("entries must be a list of entries", param="lore")
    if len(entries_raw) > MAX_ENTRIES:
        raise InvalidArgument(
            f"lore book {bid!r} has {len(entries_raw)} entries; the limit is {MAX_ENTRIES}", param="lore"
        )
    entries = tuple(parse_entry(e, f"entries[{i}]") for i, e in enumerate(entries_raw))
    chars = sum(len(e.content) for e in entries)
    if chars > MAX_BOOK_CHARS:
        raise InvalidArgument(
            f"lore book {bid!r} holds {chars} characters; the limit is {MAX_BOOK_CHARS}", param="lore"
        )
    name = raw.get("name", "")
    return prepare(
        LoreBook(
            id=bid,
            personas=personas,
            entries=entries,
            name=name if isinstance(name, str) else "",
            token_budget=_int(raw.get("token_budget"), "token_budget", DEFAULT_TOKEN_BUDGET, 1, 1 << 20),
            scan_depth=_int(raw.get("scan_depth"), "scan_depth", DEFAULT_SCAN_DEPTH, 0, MAX_SCAN_DEPTH),
            case_sensitive=bool(_bool(raw.get("case_sensitive"), "case_sensitive", False)),
            source=source,
        )
    )


def prepare(book: LoreBook) -> LoreBook:
    prepared = []
    for e in book.entries:
        cs = book.case_sensitive if e.case_sensitive is None else e.case_sensitive
        norm: Callable[[str], str] = (lambda s: s) if cs else str.lower
        prepared.append((tuple(map(norm, e.keys)), tuple(map(norm, e.secondary_keys)), cs))
    return LoreBook(
        id=book.id,
        personas=book.personas,
        entries=book.entries,
        name=book.name,
        token_budget=book.token_budget,
        scan_depth=book.scan_depth,
        case_sensitive=book.case_sensitive,
        source=book.source,
        _prepared=tuple(prepared),
    )


def book_to_dict(book: LoreBook) -> dict[str, Any]:
    """The dict form ``parse_book`` reads (what the store keeps and the API returns)."""
    return {
        "id": book.id,
        "name": book.name,
        "personas": list(book.personas),
        "token_budget": book.token_budget,
        "scan_depth": book.scan_depth,
        "case_sensitive": book.case_sensitive,
        "entries": [
            {
                "name": e.name,
                "content": e.content,
                "keys": list(e.keys),
                "secondary_keys": list(e.secondary_keys),
                "selective": e.selective,
                "selective_logic": e.selective_logic,
                "constant": e.constant,
                "enabled": e.enabled,
                "insertion_order": e.insertion_order,
                "priority": e.priority,
                **({"case_sensitive": e.case_sensitive} if e.case_sensitive is not None else {}),
            }
            for e in book.entries
        ],
    }


def book_from_card(persona_id: str, card: Mapping[str, Any] | None) -> LoreBook | None:
    """A character card's ``character_book`` as the persona's own book (None when the card has none)."""
    if not card:
        return None
    data = card.get("data")
    book = data.get("character_book") if isinstance(data, Mapping) else None
    if not isinstance(book, Mapping) or not isinstance(book.get("entries"), list):
        return None
    entries = []
    for i, raw in enumerate(book["entries"]):
        try:
            entries.append(parse_entry(raw, f"character_book.entries[{i}]", strict=False))
        except InvalidArgument:
            continue  # a card's empty or keyless entry does nothing in SillyTavern either
    budget = book.get("token_budget")
    depth = book.get("scan_depth")
    return prepare(
        LoreBook(
            id=f"card-{persona_id}"[:64],
            personas=(persona_id,),
            entries=tuple(entries[:MAX_ENTRIES]),
            name=str(book.get("name") or ""),
            token_budget=budget if isinstance(budget, int) and budget > 0 else DEFAULT_TOKEN_BUDGET,
            scan_depth=depth if isinstance(depth, int) and 0 <= depth <= MAX_SCAN_DEPTH else DEFAULT_SCAN_DEPTH,
        )
    )


# --- selection ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chosen:
    """Entries chosen for a prompt: ``world`` (constant, before the persona) and ``matched`` (for this line)."""

    world: tuple[LoreEntry, ...] = ()
    matched: tuple[LoreEntry, ...] = ()


def _matches(keys: Sequence[str], hay: str, lowered: str, case_sensitive: bool) -> list[bool]:
    text = hay if case_sensitive else lowered
    return [k in text for k in keys]


def select(
    books: Iterable[LoreBook],
    recent: Sequence[str],
    line: str,
    count: Callable[[str], int],
) -> Chosen:
    """The entries of ``books`` for a line: ``recent`` are the conversation's turns as text, newest last."""
    world: list[tuple[str, int, LoreEntry]] = []
    matched: list[tuple[int, LoreEntry]] = []
    scans: dict[int, tuple[str, str]] = {}
    for book in books:
        depth = book.scan_depth
        if depth not in scans:
            hay = "\n".join([*(recent[-depth:] if depth else ()), line])
            scans[depth] = (hay, hay.lower())
        hay, lowered = scans[depth]
        budget = book.token_budget
        fixed: list[LoreEntry] = []
        hits: list[LoreEntry] = []
        for entry, (keys, secondary, cs) in zip(book.entries, book._prepared, strict=True):
            if not entry.enabled:
                continue
            if entry.constant:
                fixed.append(entry)
                continue
            if not any(_matches(keys, hay, lowered, cs)):
                continue
            if entry.selective and secondary:
                found = _matches(secondary, hay, lowered, cs)
                logic = entry.selective_logic
                ok = (
                    any(found)
                    if logic == "and_any"
                    else all(found)
                    if logic == "and_all"
                    else not any(found)
                    if logic == "not_any"
                    else not all(found)
                )
                if not ok:
                    continue
            hits.append(entry)
        used = sum(count(e.content) for e in fixed)
        # Highest priority first; the lowest are the ones left out when the budget runs out.
        for entry in sorted(hits, key=lambda e: (-e.priority, e.insertion_order)):
            n = count(entry.content)
            if used + n <= budget:
                used += n
                matched.append((entry.insertion_order, entry))
        world.extend((("0" if book.shared else "1") + book.id, e.insertion_order, e) for e in fixed)
    world.sort(key=lambda t: (t[0], t[1]))
    matched.sort(key=lambda t: t[0])
    return Chosen(tuple(e for _, _, e in world), tuple(e for _, e in matched))


def render_entries(entries: Sequence[LoreEntry]) -> str:
    """Entries as prompt text: one bracketed line each, so lore can never read as someone speaking."""
    return "".join(f"[{LINE_BREAKS.sub(' ', e.content).strip()}]\n" for e in entries)


def check_budget(book: LoreBook, context_size: int, count: Callable[[str], int]) -> None:
    """A book's budget must fit the context, and its constant entries its budget (they are always in)."""
    if book.token_budget > context_size // 2:
        raise InvalidArgument(
            f"lore book {book.id!r} has token_budget {book.token_budget}, more than half the context window "
            f"({context_size} tokens): lower it",
            param="token_budget",
        )
    fixed = sum(count(e.content) for e in book.entries if e.constant and e.enabled)
    if fixed > book.token_budget:
        raise InvalidArgument(
            f"lore book {book.id!r}: its constant entries take {fixed} tokens, more than its token_budget "
            f"{book.token_budget}; raise the budget or shorten them",
            param="token_budget",
        )


# --- the registry and the files ----------------------------------------------------------------------------------


class LoreRegistry:
    """Every book the server knows (files and API), indexed by persona."""

    def __init__(self) -> None:
        self._books: dict[str, LoreBook] = {}
        self._by_persona: dict[str, tuple[LoreBook, ...]] = {}
        #: Token counts of entry contents (selection counts the same entries line after line).
        self._counts: dict[str, int] = {}

    def put(self, book: LoreBook) -> None:
        self._books[book.id] = book
        self._index()

    def remove(self, book_id: str) -> LoreBook | None:
        book = self._books.pop(book_id, None)
        self._index()
        return book

    def get(self, book_id: str) -> LoreBook | None:
        return self._books.get(book_id)

    def list(self) -> list[LoreBook]:
        return [self._books[k] for k in sorted(self._books)]

    def for_persona(self, persona_id: str) -> tuple[LoreBook, ...]:
        return self._by_persona.get(persona_id, ())

    def _index(self) -> None:
        index: dict[str, list[LoreBook]] = {}
        for book in self.list():
            for p in book.personas:
                index.setdefault(p, []).append(book)
        self._by_persona = {k: tuple(v) for k, v in index.items()}

    def counter(self, tokenize: Callable[[str], int]) -> Callable[[str], int]:
        def count(text: str) -> int:
            n = self._counts.get(text)
            if n is None:
                if len(self._counts) > 100_000:
                    self._counts.clear()
                n = self._counts[text] = tokenize(render_entries([LoreEntry(content=text, constant=True)]))
            return n

        return count


def load_book_file(path: Path) -> LoreBook:
    raw = path.read_bytes()
    if len(raw) > MAX_BOOK_CHARS * 2:
        raise InvalidArgument(f"{path}: {len(raw)} bytes; a lore file may hold {MAX_BOOK_CHARS * 2}", param="lore")
    return parse_book(tomllib.loads(raw.decode()), book_id=path.stem, source=str(path))


class LoreFiles:
    """Loads ``<folder>/*.toml`` lore books into a registry and applies saved changes (like persona files): a file
    that does not load keeps its last good version, and the error goes to the log."""

    def __init__(self, registry: LoreRegistry, folder: Path | None, check: Callable[[LoreBook], None]) -> None:
        self.registry = registry
        self.folder = folder.resolve() if folder is not None else None
        self._check = check
        self._ids: dict[Path, str] = {}
        #: The last error of each file that failed ("" once it loads).
        self.errors: dict[str, str] = {}

    def sync_all(self) -> int:
        if self.folder is None or not self.folder.is_dir():
            return 0
        files = sorted(self.folder.glob("*.toml"))
        loaded = sum(self.apply(p) for p in files)
        for path in [p for p in self._ids if p not in files]:
            self.apply(path)
        return loaded

    def apply(self, path: Path) -> bool:
        if not path.is_file():
            gone = self._ids.pop(path, None)
            if gone is not None:
                self.registry.remove(gone)
                log.warning("lore file %s is gone: book %r removed", path, gone)
            return False
        try:
            book = load_book_file(path)
            self._check(book)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, NpcError) as exc:
            text = exc.message if isinstance(exc, NpcError) else str(exc)
            self.errors[str(path)] = text
            log.error("lore file %s not loaded (its last good version, if any, stays live): %s", path, text)
            return False
        owner = self.registry.get(book.id)
        if owner is not None and owner.source and owner.source != str(path):
            log.error("lore file %s not loaded: book id %r is already defined by %s", path, book.id, owner.source)
            return False
        previous = self._ids.get(path)
        if previous is not None and previous != book.id:
            self.registry.remove(previous)
        self.registry.put(book)
        self._ids[path] = book.id
        self.errors.pop(str(path), None)
        log.info("lore file %s applied (book %r, %d entries)", path, book.id, len(book.entries))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        if self.folder is None or not self.folder.is_dir():
            return
        async for changes in awatch(self.folder, stop_event=stop, debounce=150, step=25, recursive=False):
            for _, p in sorted(changes):
                path = Path(p)
                if path.suffix == ".toml":
                    try:
                        await asyncio.to_thread(self.apply, path)
                    except Exception:
                        log.exception("applying lore file %s failed", path)
