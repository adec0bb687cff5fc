"""The blocking side of the few operations where the asyncio and blocking clients differ (see ``_io_async``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import grpc

from npcserver.client._common import CHANNEL_OPTIONS

_P = ParamSpec("_P")
_R = TypeVar("_R")


def open_channel(target: str) -> Any:
    """A blocking grpc channel to ``target``."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def run_blocking(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Runs a blocking call in the calling thread."""
    return fn(*args, **kwargs)
