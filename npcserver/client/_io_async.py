"""The asyncio side of the few operations where the asyncio and blocking clients differ.

``sync.py`` is generated from ``aio.py`` (``tools/gen_sync_client.py``), which swaps this module for ``_io_sync``;
the two modules keep the same names and signatures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import grpc.aio

from npcserver.client._common import CHANNEL_OPTIONS

_P = ParamSpec("_P")
_R = TypeVar("_R")


def open_channel(target: str) -> Any:
    """A grpc.aio channel to ``target``; it belongs to the event loop running now."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def run_blocking(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Runs a blocking call (starting or stopping a server process) in a thread, so the loop stays responsive."""
    return await asyncio.to_thread(fn, *args, **kwargs)
