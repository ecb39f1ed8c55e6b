"""Protobuf wire-format pieces for building malformed inputs by hand (the fuzz tests)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    """A field key: the number and the wire type (0 varint, 1 i64, 2 length, 5 i32, …)."""
    return varint((field_number << 3) | wire_type)
