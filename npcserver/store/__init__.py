"""Persistence of personas and conversations.

``npcserver.store.base`` is the ``Store`` protocol the core depends on; ``npcserver.store.sqlite`` is the default
backend. This package imports nothing from the core, and this file imports no backend, so depending on the protocol
never loads one.
"""
