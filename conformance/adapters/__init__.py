"""Adapters: how the harness makes the vendor software act.

A scenario states an intent (``conformance.adapters.intents``: record a vaccination, read a history,
correct or cancel a record, record a refusal); an adapter (``perform(intent) -> AdapterResult``) makes
the software under test carry it out and reports what the software showed. Kinds: ``reference``, a
correct built-in client of the Vaccicard API (``reference.ReferenceAdapter``); ``faulty:<defect>``, the
reference client with one deliberate defect, which proves each check can fail (``faulty``); ``http``,
the intent POSTed to the vendor's hook (``http_hook``); ``command``, the vendor's command with the
intent on stdin (``command``). The built-in clients send an intent marked ``encrypted`` sealed for
Vaccicard through ``etee_client``. ``examples/vendor-hook/`` shows a vendor the ``http`` and ``command``
contracts.
"""

from __future__ import annotations

from typing import Protocol

from conformance.adapters.intents import AdapterResult, Intent

__all__ = ["Adapter"]


class Adapter(Protocol):
    """Makes the software under test carry out one intent and reports what it showed."""

    def perform(self, intent: Intent) -> AdapterResult:
        """Carry out ``intent``; never raises for a register refusal (that is a ``rejected`` result)."""
        ...
