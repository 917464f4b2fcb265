"""
Fuzzing the entry format (issue "Entries you can trust", item 6).

Valid entries are built from small harmless objects with
``schemas.make_header`` + ``framing.encode_entry`` (no compile, so examples are
cheap), then mutated: bit flips (often inside the header), truncation, splices
of two entries, a payload moved under another header, inserted bytes, a
rewritten header-length field, and edits of the JSON header (a field changed,
removed, added or duplicated; the length fixed up or not).  Whatever comes
out:

* ``find_entry`` (reading the mutated file from the store, where it sits under
  the original's name, as on-disk corruption would leave it) never raises; it
  misses, or returns an entry whose payload bytes are an original payload and
  whose object equals the original object;
* ``pickle.loads`` only ever sees an original payload (nothing unverified is
  unpickled);
* ``framing.verify_entry`` raises ``EntryFormatError`` or accepts an entry
  whose payload is an original payload;
* with signing on, an entry is accepted only if its header is, field for
  field, the header that was signed: any edit of a header field is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import struct
import unittest
import unittest.mock
from typing import Any

import torch
from hypothesis import assume, event, given, settings, strategies as st
from hypothesis.control import currently_in_test_context

from torch_aotcache import autograd_cache as ours
from torch_aotcache.tiers import lookup
from torch_aotcache import config, schemas
from torch_aotcache.entry import framing
from torch_aotcache.store.layout import key_dir
from torch_aotcache.store.local import LocalStore

from common import CacheTestCase


KEY = "tac" + "5e" * 20
OTHER_KEY = "tac" + "a7" * 20
TORCH = torch.__version__
HEAD = len(schemas.MAGIC) + 4  # magic + header length
EXAMPLES = max(200, settings.default.max_examples)

harmless_objects = st.one_of(
    st.integers(),
    st.text(max_size=30),
    st.binary(max_size=64),
    st.lists(st.integers(-5, 5), max_size=8),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=4),
    st.tuples(st.booleans(), st.none(), st.floats(allow_nan=False)),
)


@dataclasses.dataclass
class Original:
    obj: Any
    payload: bytes
    header: schemas.EntryHeader
    data: bytes


def build(obj: Any, key: str, guards: str = "", cost: int = 1) -> Original:
    payload = pickle.dumps(obj)
    # Two carried "kernels" (Note [Self-contained entries]): raw bytes after
    # the payload, covered by the header's checksums.
    kernels = [
        (hashlib.sha256(f"{key}/{i}".encode()).hexdigest(), b"\x7fELF" + payload[: 40 * (i + 1)])
        for i in range(2)
    ]
    header = schemas.make_header(
        key=key,
        payload=payload,
        torch_version=TORCH,
        created_ns=1_700_000_000_000_000_000,
        forward_cost_ns=cost,
        backward_cost_ns=2,
        guards_expr=guards,
        mode="bundled",
        components={"graph": "g" * 8, "inputs": "i" * 8},
        extra={"note": "fuzz"},
        artifacts=kernels,
    )
    data = framing.encode_entry(header, payload, [b for _, b in kernels])
    # encode_entry signs when a key is configured: keep the header as written.
    return Original(obj, payload, framing.decode_header(data)[0], data)


def raw_header(data: bytes) -> tuple[bytes, bytes] | None:
    """(JSON header, rest) of ``data`` as its length field cuts it, or None."""
    if len(data) < HEAD:
        return None
    (hlen,) = struct.unpack(">I", data[len(schemas.MAGIC) : HEAD])
    if HEAD + hlen > len(data):
        return None
    return data[HEAD : HEAD + hlen], data[HEAD + hlen :]


def reassemble(data: bytes, new_raw: bytes, old_len: int, fix_length: bool) -> bytes:
    length = len(new_raw) if fix_length else old_len
    return data[: len(schemas.MAGIC)] + struct.pack(">I", length) + new_raw + data[HEAD + old_len :]


FIELDS = [f.name for f in dataclasses.fields(schemas.EntryHeader)]
# The fields a reader acts on: drawn as often as all the others together.
CHECKED_FIELDS = ["key", "torch_version", "payload_size", "payload_sha256", "guards_expr", "format_version", "key_id", "signature", "artifacts"]

odd_strings = st.sampled_from(
    ["", "x", "é", "\ud800", "0" * 64, "f" * 64, TORCH, "0.0.0", KEY, OTHER_KEY, "L['t0'] >= 2", "True", "1/0"]
)
any_value = st.one_of(
    odd_strings,
    st.text(max_size=12),
    st.integers(-(2**70), 2**70),
    st.sampled_from([None, True, False, 1.5, [], {}, [1], {"a": 1}]),
)


@st.composite
def header_edit(draw: st.DrawFn, data: bytes) -> bytes:
    """Change, drop, add or duplicate one field of the JSON header."""
    parts = raw_header(data)
    if parts is None:
        return data
    raw, _ = parts
    try:
        obj = json.loads(raw)
    except ValueError:
        return data
    if not isinstance(obj, dict):
        return data
    how = draw(st.sampled_from(["change", "change", "change", "nudge", "drop", "add", "duplicate"]))
    name = draw(st.one_of(st.sampled_from(CHECKED_FIELDS), st.sampled_from(FIELDS)))
    sort_keys = draw(st.booleans())
    if how == "nudge" and isinstance(obj.get(name), int) and not isinstance(obj.get(name), bool):
        obj[name] += draw(st.sampled_from([-1, 1, 1 << 20]))
    elif how == "nudge" and isinstance(obj.get(name), str):
        obj[name] = obj[name] + draw(st.sampled_from(["x", " ", "0"]))
    elif how in ("change", "nudge"):
        obj[name] = draw(any_value)
    elif how == "drop":
        obj.pop(name, None)
    elif how == "add":
        obj[draw(st.sampled_from(["zzz", "Key", "guards"]))] = draw(any_value)
    new_raw = json.dumps(obj, sort_keys=sort_keys, separators=(",", ":")).encode()
    if how == "duplicate":
        # JSON keeps the last of two equal names.
        dup = json.dumps({name: draw(any_value)})[1:-1].encode()
        new_raw = new_raw[:-1] + (b"," if len(new_raw) > 2 else b"") + dup + b"}"
    return reassemble(data, new_raw, len(raw), fix_length=draw(st.booleans()))


@st.composite
def mutation(draw: st.DrawFn, originals: list[Original]) -> bytes:
    data = originals[0].data
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["flip", "flip_header", "truncate", "splice", "swap_payload", "insert", "length", "header", "header"]
            )
        )
        if op in ("flip", "flip_header") and data:
            hi = len(data) - 1
            if op == "flip_header" and (parts := raw_header(data)) is not None:
                hi = HEAD + len(parts[0]) - 1
            buf = bytearray(data)
            for pos in draw(st.lists(st.integers(0, hi), min_size=1, max_size=8)):
                buf[pos] ^= 1 << draw(st.integers(0, 7))
            data = bytes(buf)
        elif op == "truncate" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == "splice":
            other = draw(st.sampled_from(originals)).data
            i = draw(st.integers(0, len(data)))
            j = draw(st.integers(0, len(other)))
            data = data[:i] + other[j:]
        elif op == "swap_payload":
            other = draw(st.sampled_from(originals))
            parts = raw_header(data)
            if parts is not None:
                data = data[: HEAD + len(parts[0])] + other.payload
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data = data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
        elif op == "length" and len(data) >= HEAD:
            length = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, len(data))))
            data = data[: len(schemas.MAGIC)] + struct.pack(">I", length) + data[HEAD:]
        elif op == "header":
            data = draw(header_edit(data))
    return data


class FuzzTestCase(CacheTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Refused entries are logged once per path; keep the test output quiet.
        self.enterContext(unittest.mock.patch.object(lookup.log, "warning"))

    def originals(self, objs: list[Any], second_key: str, second_guards: str) -> list[Original]:
        a = build(objs[0], KEY)
        b = build(objs[1], second_key, guards=second_guards, cost=3)
        c = build(objs[0], KEY, cost=5)  # same payload as a, another header
        return [a, b, c]

    def check(self, data: bytes, originals: list[Original], signed: bool) -> None:
        payloads = {o.payload for o in originals}
        store = LocalStore()
        shutil.rmtree(key_dir(KEY), ignore_errors=True)
        # In place of the original, as corruption on the disk would leave it.
        store.put(KEY, originals[0].header.entry_id, data)

        unpickled: list[bytes] = []
        real_loads = pickle.loads

        def spy(b: Any, *args: Any, **kwargs: Any) -> Any:
            unpickled.append(bytes(b))
            return real_loads(b, *args, **kwargs)

        with unittest.mock.patch.object(pickle, "loads", spy):
            found = lookup.find_entry(KEY, True, [], {})  # must not raise
        for b in unpickled:
            self.assertIn(b, payloads, "unpickled a payload that was never verified")
        if currently_in_test_context():
            event("find_entry: hit" if found is not None else "find_entry: miss")
        if found is not None:
            obj, entry_bytes = found.result, found.data
            self.assertEqual(entry_bytes, data)
            header, body = framing.decode_header(entry_bytes)
            payload = body[: header.payload_size]  # the carried kernels follow it
            [match] = [o for o in originals if o.payload == bytes(payload)][:1]
            self.assertEqual(obj, match.obj)

        try:
            verified = framing.verify_entry(data, key=KEY, torch_version=TORCH)
            header, payload = verified.header, verified.payload
        except schemas.EntryFormatError:
            self.assertIsNone(found)
            return
        self.assertIn(bytes(payload), payloads)
        if signed:
            # Accepted only as signed: every field as written.
            self.assertIn(header, [o.header for o in originals])


class TestFuzzEntries(FuzzTestCase):
    @settings(max_examples=EXAMPLES)
    @given(
        objs=st.lists(harmless_objects, min_size=2, max_size=2),
        second_key=st.sampled_from([KEY, OTHER_KEY]),
        second_guards=st.sampled_from(["", "L['t0'] >= 2"]),
        data=st.data(),
    )
    def test_mutated_entries_unsigned(self, objs: list[Any], second_key: str, second_guards: str, data: st.DataObject) -> None:
        originals = self.originals(objs, second_key, second_guards)
        self.check(data.draw(mutation(originals), label="mutated"), originals, signed=False)

    @settings(max_examples=EXAMPLES)
    @given(
        objs=st.lists(harmless_objects, min_size=2, max_size=2),
        second_key=st.sampled_from([KEY, OTHER_KEY]),
        data=st.data(),
    )
    def test_mutated_entries_signed(self, objs: list[Any], second_key: str, data: st.DataObject) -> None:
        with config.patch(signing_key="k1"):
            originals = self.originals(objs, second_key, "")
            self.check(data.draw(mutation(originals), label="mutated"), originals, signed=True)

    @settings(max_examples=EXAMPLES)
    @given(obj=harmless_objects, data=st.data())
    def test_header_edits_unsigned(self, obj: Any, data: st.DataObject) -> None:
        # Header edits alone, more of them than the mixed mutations above draw.
        original = build(obj, KEY)
        self.check(data.draw(header_edit(original.data), label="edited"), [original], signed=False)

    @settings(max_examples=EXAMPLES)
    @given(obj=harmless_objects, data=st.data())
    def test_any_header_field_edit_is_refused_when_signed(self, obj: Any, data: st.DataObject) -> None:
        with config.patch(signing_key="k1"):
            original = build(obj, KEY)
            mutated = data.draw(header_edit(original.data), label="edited")
            try:
                header, _ = framing.decode_header(mutated)
            except schemas.EntryFormatError:
                header = None
            # Only edits that change what the header says (a value written
            # back unchanged, or an unknown field, leave it as signed).
            assume(header != original.header)
            with self.assertRaises(schemas.EntryFormatError):
                framing.verify_entry(mutated, key=KEY, torch_version=TORCH)
            self.check(mutated, [original], signed=True)

    def test_corrupted_guard_is_never_evaluated(self) -> None:
        # Unsigned, the header has no checksum of its own: the file name
        # (the hash of the guard expression) is what catches an edited guard.
        original = build([1, 2], KEY)
        raw, _ = raw_header(original.data)
        obj = json.loads(raw)
        obj["guards_expr"] = "__import__('os').getpid() > 0"
        edited = reassemble(original.data, json.dumps(obj).encode(), len(raw), fix_length=True)
        evaluate = unittest.mock.Mock(return_value=True)
        with unittest.mock.patch.object(ours.upstream.AOTAutogradCache, "evaluate_guards", evaluate):
            self.check(edited, [original], signed=False)
            self.assertIsNone(lookup.find_entry(KEY, True, [], {}))
        evaluate.assert_not_called()

    def test_non_ascii_digest_is_a_clean_miss(self) -> None:
        original = build("x", KEY)
        edited = dataclasses.replace(original.header, payload_sha256="é" * 64)
        data = framing.encode_entry(edited, original.payload)
        LocalStore().put(KEY, original.header.entry_id, data)
        self.assertIsNone(lookup.find_entry(KEY, True, [], {}))

    def test_verify_entry_non_ascii_digest_is_a_format_error(self) -> None:
        # hmac.compare_digest raises TypeError for non-ASCII text: the header
        # check must refuse such a field first.
        original = build("x", KEY)
        edited = dataclasses.replace(original.header, payload_sha256="é" * 64)
        with self.assertRaises(schemas.EntryFormatError):
            framing.verify_entry(framing.encode_entry(edited, original.payload), key=KEY, torch_version=TORCH)


if __name__ == "__main__":
    unittest.main()
