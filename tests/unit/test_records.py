"""Records made as named tuples or small classes (cheaper to define at every start than
dataclasses) keep a dataclass's meaning: equal only to their own kind, immutable, hashable."""

from __future__ import annotations

import errno
import os

import pytest

from appvirt.core.action import (NO_NOTE, Allow, Deny, Emulate, ExitResult, Kill, Note, Rewrite,
                                 SlotData)
from appvirt.core.table import ArgIn, ArgNotIn
from appvirt.overlay.meta import FileMeta
from appvirt.overlay.model import Change, ChangeKind, DirEntry, Entry, FileType, Layer
from appvirt.policy.model import FileMode, FilesPolicy
from appvirt.store.values import Value, ValueType

KINDED = [
    Note(rule="files.default"), SlotData(b"x"), ExitResult(), Allow(), Rewrite(((1, 2),)),
    Emulate(0), Deny(errno.EPERM), Kill("why"), ArgIn(0, frozenset({1})),
    Entry(b"/a", Layer.UPPER, b"/u/a", os.stat("/")), DirEntry(b"a", 4, 1),
    Change(b"/a", ChangeKind.ADDED, FileType.FILE, 1), FileMeta(uid=0),
]


@pytest.mark.parametrize("record", KINDED, ids=lambda r: type(r).__name__)
def test_a_record_equals_its_own_kind_only(record):
    assert record == type(record)(*record)
    assert hash(record) == hash(type(record)(*record))
    assert record != tuple(record)              # a tuple of the same fields is not the record
    assert not (record == tuple(record))


def test_records_of_two_kinds_with_the_same_fields_differ():
    assert ArgIn(0, frozenset({1})) != ArgNotIn(0, frozenset({1}))
    assert len({ArgIn(0, frozenset({1})), ArgNotIn(0, frozenset({1}))}) == 2
    assert Deny(errno.EPERM, NO_NOTE) != (errno.EPERM, NO_NOTE, False)


@pytest.mark.parametrize("record", KINDED, ids=lambda r: type(r).__name__)
def test_a_record_is_immutable(record):
    with pytest.raises(AttributeError):
        record.__setattr__(type(record)._fields[0], None)


def test_a_value_is_validated_normalised_and_immutable():
    assert Value.multi(["a", "b"]).data == ("a", "b")
    assert Value.binary(bytearray(b"\1")).data == b"\1"
    assert Value.multi(["a"]) == Value(ValueType.MULTI, ("a",))
    assert hash(Value.integer(3)) == hash(Value.integer(3))
    assert Value.integer(3) != Value.string("3")
    v = Value.string("x")
    with pytest.raises(AttributeError):
        v.data = "y"                            # type: ignore[misc]
    with pytest.raises(AttributeError):
        del v.type
    assert repr(v) == "Value(type=<ValueType.STRING: 'string'>, data='x')"


def test_files_policy_compares_by_its_rules_not_its_cache():
    a, b = FilesPolicy(FileMode.OVERLAY, ()), FilesPolicy(FileMode.OVERLAY, ())
    a.mode_for(b"/etc/passwd")
    assert a == b and hash(a) == hash(b)
    assert a != FilesPolicy(FileMode.READONLY, ())
