"""Equality by kind for records made as named tuples.

Named tuples are several times cheaper to define and to make than frozen dataclasses (start-up
and every stop pay for them), but as tuples two records of different kinds with the same fields
would be equal (an ArgIn and an ArgNotIn, a Deny and a Kill): records that could meet assign
these three, so that each compares, and hashes, by kind too.
"""

from __future__ import annotations


def same_kind(self: tuple, other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def other_kind(self: tuple, other: object) -> bool:
    return not same_kind(self, other)


def kind_hash(self: tuple) -> int:
    return hash((type(self).__name__, tuple(self)))
