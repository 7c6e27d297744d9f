"""Shared strategies and helpers of the configuration-store tests."""

from __future__ import annotations

from hypothesis import strategies as st

from appvirt.store import BaseLayer, Store, Value
from appvirt.store.keys import join, prefixes
from appvirt.store.values import INT64_MAX, INT64_MIN

BASE = BaseLayer.build({
    "app/settings": {"theme": Value.string("dark"), "retries": Value.integer(3)},
    "app/settings/plugins/spell": {"enabled": Value.integer(1)},
    "app/settings/plugins/grammar": {"enabled": Value.integer(0)},
    "machine/uts": {"hostname": Value.string("base-host")},
})

# Few names, so that operations collide: 'b' is both a key component and a value name.
COMPONENTS = ["a", "b", "c"]
VALUE_NAMES = ["x", "y", "b"]

keys = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map("/".join)
names = st.sampled_from(VALUE_NAMES)

# Text with the characters that stress the export format: quotes, backslashes, brackets,
# newlines, tabs, non-BMP, zero-width and bidi controls, DEL/C1 controls.
odd_text = st.text(alphabet=st.sampled_from(
    list('ab "\\]=[,;-#:\n\r\t') + ["\x01", "\x7f", "\x85", "\u200b", "\u202e", "\u2028",
                                    "é", "\U0001f600", "\ufeff"]), max_size=12)
line_text = odd_text.map(lambda s: s.replace("\n", ""))   # multi items hold no newline

values = st.one_of(
    odd_text.map(Value.string),
    st.sampled_from([0, 1, -1, INT64_MIN, INT64_MAX]).map(Value.integer),
    st.integers(INT64_MIN, INT64_MAX).map(Value.integer),
    st.binary(max_size=12).map(Value.binary),
    st.lists(line_text, max_size=4).map(Value.multi),
)


@st.composite
def bases(draw: st.DrawFn) -> BaseLayer:
    """A small base layer on the same names; values that would collide with keys dropped."""
    raw = draw(st.dictionaries(keys, st.dictionaries(names, values, max_size=2), max_size=4))
    all_keys = {p for k in raw for p in prefixes(k)}
    clean = {k: {n: v for n, v in vals.items() if join(k, n) not in all_keys}
             for k, vals in raw.items()}
    return BaseLayer.build(clean)


def view_of(store: Store) -> tuple[dict[str, bool], dict[tuple[str, str], Value]]:
    v = store.view()
    return dict(v.keys), dict(v.values)
