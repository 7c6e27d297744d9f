"""Small handler builders shared by the operation classes."""

from __future__ import annotations

import errno as errnos

from ..core.action import Action, Deny, Note
from ..core.context import Context
from ..core.stop import Stop


def refuse(err: int, hint: str = "", rule: str = "builtin:refused"):
    """A handler that always refuses the call with `err`."""
    note = Note(rule=rule, hint=hint)

    def handler(stop: Stop, ctx: Context) -> Action:
        return Deny(err, note)
    handler.__doc__ = f"Refuse with {errnos.errorcode.get(err, err)}."
    return handler
