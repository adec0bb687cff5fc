"""Named sampling presets and the precedence that resolves a request's sampling parameters."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from npcserver.core.types import Persona, Preset, SamplingOverrides
from npcserver.engine.base import SamplingParams
from npcserver.errors import InvalidArgument, NotFound

_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")


def check_sampling(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repeat_penalty: float | None = None,
    max_tokens: int | None = None,
    where: str = "",
) -> None:
    """Raises InvalidArgument naming the first field out of range. ``where`` prefixes the field name."""
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidArgument(f"{where}temperature must be between 0 and 2, got {temperature:g}", param="temperature")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"{where}top_p must be in (0, 1], got {top_p:g}", param="top_p")
    if top_k is not None and top_k < 0:
        raise InvalidArgument(f"{where}top_k must be 0 (off) or positive, got {top_k}", param="top_k")
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise InvalidArgument(f"{where}min_p must be between 0 and 1, got {min_p:g}", param="min_p")
    if repeat_penalty is not None and not 0.0 < repeat_penalty <= 4.0:
        raise InvalidArgument(
            f"{where}repeat_penalty must be in (0, 4], got {repeat_penalty:g}", param="repeat_penalty"
        )
    if max_tokens is not None and max_tokens < 0:
        raise InvalidArgument(
            f"{where}max_tokens must be 0 (until stop) or positive, got {max_tokens}", param="max_tokens"
        )


def _parse(doc: dict[str, Any], origin: str) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for name, body in doc.items():
        if not isinstance(body, dict):
            raise ValueError(f"{origin}: [{name}] must be a table of preset fields")
        missing = [f for f in _FIELDS if f not in body]
        unknown = sorted(set(body) - {*_FIELDS, "description"})
        if missing or unknown:
            raise ValueError(f"{origin}: preset [{name}] is missing {missing} / has unknown fields {unknown}")
        try:
            check_sampling(**{f: body[f] for f in _FIELDS}, where=f"{origin}: preset [{name}] ")
        except InvalidArgument as exc:
            raise ValueError(exc.message) from exc
        presets[name] = Preset(
            name=name,
            description=str(body.get("description", "")),
            temperature=float(body["temperature"]),
            top_p=float(body["top_p"]),
            top_k=int(body["top_k"]),
            min_p=float(body["min_p"]),
            repeat_penalty=float(body["repeat_penalty"]),
        )
    return presets


class PresetBook:
    """The built-in presets, overlaid by an optional TOML file (same table layout as npcserver/data/presets.toml)."""

    def __init__(self, default: str = "dialogue", extra_file: Path | None = None) -> None:
        self.extra_file = extra_file
        self.default = default
        #: Why the extra file's latest version did not load ("" when it did); the last good presets stay live.
        self.load_error = ""
        self._presets = self._read()

    def _read(self) -> dict[str, Preset]:
        builtin = resources.files("npcserver").joinpath("data/presets.toml").read_text(encoding="utf-8")
        presets = _parse(tomllib.loads(builtin), "built-in presets")
        if self.extra_file is not None:
            with open(self.extra_file, "rb") as f:
                presets.update(_parse(tomllib.load(f), str(self.extra_file)))
        if self.default not in presets:
            raise ValueError(f"default preset {self.default!r} is not defined; known: {', '.join(sorted(presets))}")
        return presets

    def reload(self) -> None:
        """Reads the extra file again. On an error (raised) the presets in use stay as they were."""
        try:
            presets = self._read()
        except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
            text = str(exc)
            self.load_error = text if str(self.extra_file) in text else f"{self.extra_file}: {text}"
            raise ValueError(self.load_error) from exc
        # One assignment: a request resolving its sampling sees the old book or the new one, never a mix.
        self._presets = presets
        self.load_error = ""

    def names(self) -> list[str]:
        return sorted(self._presets)

    def list(self) -> list[Preset]:
        return [self._presets[n] for n in self.names()]

    def get(self, name: str, *, param: str = "preset") -> Preset:
        try:
            return self._presets[name]
        except KeyError:
            raise NotFound(
                f"preset {name!r} does not exist; choose one of: {', '.join(self.names())}", param=param
            ) from None

    def resolve(
        self,
        overrides: SamplingOverrides,
        request_preset: str | None,
        persona: Persona | None,
        *,
        default_max_tokens: int,
        extra_stop: tuple[str, ...] = (),
    ) -> SamplingParams:
        """Explicit request field > request preset > persona default preset > server default preset."""
        if request_preset:
            preset = self.get(request_preset)
        elif persona is not None and persona.default_preset:
            preset = self.get(persona.default_preset, param="default_preset")
        else:
            preset = self._presets[self.default]

        def pick(name: str) -> Any:
            value = getattr(overrides, name)
            return getattr(preset, name) if value is None else value

        if overrides.max_tokens is not None:
            max_tokens = overrides.max_tokens
        elif persona is not None and persona.max_tokens is not None:
            max_tokens = persona.max_tokens
        else:
            max_tokens = default_max_tokens
        stop = tuple(dict.fromkeys((*overrides.stop, *(persona.stop if persona else ()), *extra_stop)))
        return SamplingParams(
            temperature=float(pick("temperature")),
            top_p=float(pick("top_p")),
            top_k=int(pick("top_k")),
            min_p=float(pick("min_p")),
            repeat_penalty=float(pick("repeat_penalty")),
            seed=overrides.seed,
            max_tokens=max_tokens,
            stop=tuple(s for s in stop if s),
        )
