"""The policy's `time:` section."""

from typing import Any, NamedTuple

from .clock import ClockSpec, ClockSpecError, parse_clock_spec

TIME_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string"},
        {"type": "object", "additionalProperties": False, "required": ["clock"],
         "properties": {"clock": {"type": "string"},
                        "set": {"enum": ["allow", "deny"]}}},
    ],
    "expected": "a clock in libfaketime's syntax ('@2030-01-01 00:00:00', '2030-01-01', "
                "'+2d', 'x10') or {clock: ..., set: allow|deny}",
}


class TimePolicy(NamedTuple):
    """None spec: the host clock (not virtualized; setting it is refused)."""

    spec: ClockSpec | None
    allow_set: bool = False

    @property
    def virtual(self) -> bool:
        return self.spec is not None


HOST_TIME = TimePolicy(None)


def time_policy(section: Any) -> TimePolicy:
    """Build from the validated section; raises ClockSpecError for a malformed clock."""
    if section is None:
        return HOST_TIME
    if isinstance(section, str):
        section = {"clock": section}
    return TimePolicy(parse_clock_spec(section["clock"]), section.get("set", "allow") == "allow")


__all__ = ["HOST_TIME", "TIME_SCHEMA", "ClockSpecError", "TimePolicy", "time_policy"]
