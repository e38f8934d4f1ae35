"""How a decision's request and answer are stored: one compressed ``record`` column.

The request as received and the decision as answered are kept byte for byte, but not as two
text columns: as JSON they took ~2.3 KB a decision (4 KiB SQLite pages held one row). They are
packed as

    format byte (1) | raw DEFLATE, preset dictionary v1, of: len(request) (4 bytes, big endian)
                      | request bytes | decision bytes

The preset dictionary (``record_dictionary_v1.bin``, 32 KiB: stored requests and decisions of
the benchmark applications) holds the keys, rule texts and reason texts every decision repeats,
so a decision packs to ~370 bytes. What the chain MACs (chain.py) are the unpacked texts, so
packing changes nothing a verifier, replay or export sees.

The dictionary is frozen: records packed with it must unpack forever. A better one is a new
file and a new format byte; ``unpack`` keeps reading every format ever written.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

FORMAT_V1 = 1
_DICTIONARY_V1 = Path(__file__).with_name("record_dictionary_v1.bin")
_DICTIONARY_V1_SHA256 = "e1e2f1ac6264bc37754355618f62a3f88d06437975fc3cdd53273efee9f4df7e"
# Level 1, small memLevel: this runs on the event loop for every decision. On the real decisions
# (~2.2 KB of JSON) level 1 packs to ~370 B in ~11 µs, level 6 to ~260 B in ~27 µs: 110 bytes
# a decision are cheaper than 16 µs of the request's CPU. The level is not part of the format:
# `unpack` reads a stream of any level.
_LEVEL, _WBITS, _MEMLEVEL = 1, -15, 6
_LENGTH = struct.Struct(">I")


class CorruptRecord(ValueError):
    """A stored record that does not unpack (unknown format, bad DEFLATE stream)."""


@functools.cache
def _dictionary_v1() -> bytes:
    data = _DICTIONARY_V1.read_bytes()
    if hashlib.sha256(data).hexdigest() != _DICTIONARY_V1_SHA256:  # frozen: see the docstring
        raise RuntimeError(f"{_DICTIONARY_V1} was changed: stored records need the original")
    return data


@functools.cache
def _primed_v1() -> zlib._Compress:
    """A compressor with the dictionary already loaded. Loading 32 KiB into a fresh one is
    most of a record's cost; copying a primed one gives the same stream ~3x faster."""
    return zlib.compressobj(
        _LEVEL, zlib.DEFLATED, _WBITS, _MEMLEVEL, zlib.Z_DEFAULT_STRATEGY, _dictionary_v1()
    )


def pack(request_json: str, decision_json: str) -> bytes:
    """The stored form of one decision's request and answer (format 1)."""
    request = request_json.encode("utf-8")
    compressor = _primed_v1().copy()
    body = compressor.compress(_LENGTH.pack(len(request)))
    body += compressor.compress(request)
    body += compressor.compress(decision_json.encode("utf-8"))
    return bytes((FORMAT_V1,)) + body + compressor.flush()


def unpack(record: bytes | memoryview) -> tuple[str, str]:
    """(request_json, decision_json) exactly as they were packed."""
    record = bytes(record)
    if not record or record[0] != FORMAT_V1:
        raise CorruptRecord(f"unknown record format {record[:1].hex() or 'empty'}")
    try:
        inflater = zlib.decompressobj(_WBITS, zdict=_dictionary_v1())
        raw = inflater.decompress(record[1:]) + inflater.flush()
        if not inflater.eof or inflater.unused_data:
            raise CorruptRecord("record is truncated or has trailing bytes")
        (length,) = _LENGTH.unpack_from(raw)
        request, decision = raw[4 : 4 + length], raw[4 + length :]
        if len(request) != length:
            raise CorruptRecord("record is shorter than its request length")
        return request.decode("utf-8"), decision.decode("utf-8")
    except (zlib.error, struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"record does not unpack: {exc}") from exc


def fired_set_key(rule_ids: Iterable[str]) -> str:
    """The key of a set of fired rules (``fired_set.sha256``, tables.py): sha256 (hex) of the
    distinct ids, sorted, each as its UTF-8 length (4 bytes, big endian) and bytes. Frozen like
    the record format: sets stored under one key are found again by it, and verify recomputes
    it. A hash, not the joined ids: a unique index on PostgreSQL refuses entries over ~2.7 KB,
    and a set of 30 rules with 100-character ids would be one."""
    digest = hashlib.sha256()
    for rule_id in sorted({r.encode("utf-8") for r in rule_ids}):
        digest.update(_LENGTH.pack(len(rule_id)))
        digest.update(rule_id)
    return digest.hexdigest()
