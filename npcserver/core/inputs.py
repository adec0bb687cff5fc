"""Checks every string a request carries before any work: text is text.

Two kinds of Python string are not text: a lone surrogate (``"\\ud800"``, which JSON's ``\\ud800`` escape makes and
no UTF-8 encoder accepts) and the NUL character (which the store contract says callers must refuse: PostgreSQL's
text type has none). Either one deep inside a request used to surface as an INTERNAL error from the tokenizer or
the store; here it is INVALID_ARGUMENT naming the field, for every door at once, because the core checks the whole
request object.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from npcserver.core import limits
from npcserver.errors import InvalidArgument

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str, field: str) -> None:
    """Raises InvalidArgument naming ``field`` when ``value`` holds a NUL or a lone surrogate."""
    found = _NOT_TEXT.search(value)
    if found is None:
        return
    what = "a NUL character (\\u0000)" if found.group() == "\x00" else f"a lone surrogate (\\u{ord(found.group()):04x})"
    raise InvalidArgument(
        f"{field} contains {what} at position {found.start()}: send text as valid Unicode (UTF-8 on the wire)",
        param=field,
    )


#: Dataclass fields whose own fields are the request's on the wire (a TalkRequest's ``overrides`` are its sampling
#: options), so their paths skip the field's name.
_FLAT = frozenset({"overrides"})


def check_strings(value: Any, root: str = "") -> None:
    """Checks every string in ``value`` (dataclasses, lists, tuples and dicts, keys too), naming the first bad one by
    its path, e.g. ``messages[2].content``. Iterative: a deeply nested schema cannot overflow the stack here."""
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            for f in reversed(dataclasses.fields(item)):
                sub = path if f.name in _FLAT else f"{path}.{f.name}" if path else f.name
                stack.append((sub, getattr(item, f.name)))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    check_text(k, f"{path} (a key)")
                stack.append((f"{path}.{k}", v))


def check_seed(seed: int | None, field: str = "seed") -> None:
    if seed is not None and not limits.MIN_SEED <= seed <= limits.MAX_SEED:
        raise InvalidArgument(
            f"{field} must fit in a signed 64-bit integer ({limits.MIN_SEED} to {limits.MAX_SEED})", param=field
        )
