"""Decoding limits for untrusted CBOR, checked before anything is allocated.

``cbor2`` builds Python objects as it reads, and its only resource guard is a nesting depth (6.x,
``max_depth``); a frame of 2 MiB holding two million empty arrays makes it build two million
lists (~130 MiB and a second or more) before any caller can look at the result. :func:`check`
walks the CBOR *headers* first — major type and argument of each data item, RFC 8949 §3 — without
building a value, and refuses the input as soon as it passes one of the :class:`DecodeLimits`:

- ``max_depth``: arrays, maps and tags nested in each other;
- ``max_items``: data items in all (every integer, string, container, tag, simple value);
- ``max_alloc``: an upper estimate of the bytes of Python objects decoding would build
  (a list costs its header plus a pointer per item, a string its length plus its header, ...;
  a property test checks it against what ``cbor2`` really allocates). A semantic tag that
  converts its item (a bignum, a set) can take up to about twice what the estimate counts for
  it; session frames refuse tags.

A length or count that cannot fit in the bytes left (an array of 2**32 items in a 3-byte input)
is refused at its header, so the walk never loops on a claimed size: it reads each header once,
skips string contents in O(1), and stops after at most ``max_items`` headers. Reserved additional
information (28–30), a break outside an indefinite-length item, a string chunk of the wrong type,
truncation and trailing bytes after the one top-level item are all malformed. Tags and
indefinite lengths can be refused outright (``allow_tags`` / ``allow_indefinite``): session
frames use neither.

Only what passes goes on to ``cbor2``; see :func:`ark_lattice.encoding.decode` and
:func:`ark_lattice.protocol.frames.parse_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ark_lattice.errors import Malformed

__all__ = ["DecodeLimits", "DecodeRefused", "OverLimit", "check"]

# Upper estimates of CPython 3.11 object sizes (64-bit), in bytes: what one decoded item costs.
_INT = 36  # an int up to 64 bits
_FLOAT = 24
_BYTES = 33  # + the length
_STR = 80  # + the length: a UTF-8 string of n bytes never needs more than n bytes of code points
_LIST = 56  # + 8 per item
_DICT = 64
_DICT_PAIR = 104  # hash table slots and entries, with the growth headroom
_TAG = 64  # a CBORTag, or the object a semantic tag becomes

# Stack markers for open indefinite-length items (definite ones hold their remaining count).
_INDEF_CONTAINER = -1
_INDEF_BYTES = -2
_INDEF_TEXT = -3


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one decode may cost; every field must be at least 1."""

    max_depth: int = 8
    max_items: int = 16_384
    max_alloc: int = 8 * 1024 * 1024
    allow_tags: bool = True
    allow_indefinite: bool = True


class DecodeRefused(Malformed):
    """The input is not one well-formed CBOR item, or passes a limit; nothing was decoded."""


class OverLimit(DecodeRefused):
    """The input passes one of the :class:`DecodeLimits` (depth, items, memory)."""


def check(data: bytes, limits: DecodeLimits) -> None:
    """Raise :class:`DecodeRefused` unless ``data`` is one well-formed CBOR item within ``limits``.

    Reads headers only: costs at most ``limits.max_items`` steps whatever ``data`` holds.
    """
    size = len(data)
    pos = 0
    items = 0
    alloc = 0
    max_items, max_alloc, max_depth = limits.max_items, limits.max_alloc, limits.max_depth
    # ``remaining``: items left in the innermost open container, or an _INDEF marker; ``outer``
    # holds the same for each enclosing one. The top level is a container of exactly one item.
    remaining = 1
    outer: list[int] = []
    while True:
        if remaining == 0:
            if not outer:
                break
            remaining = outer.pop()
            continue
        if pos >= size:
            raise DecodeRefused("the CBOR ends inside an item")
        initial = data[pos]
        pos += 1
        if remaining > 0:
            remaining -= 1
        else:
            if initial == 0xFF:  # break: the indefinite-length item ends
                remaining = outer.pop()
                continue
            if remaining != _INDEF_CONTAINER:
                if initial >> 5 != (2 if remaining == _INDEF_BYTES else 3):
                    raise DecodeRefused("a chunk of an indefinite-length string has another type")
                if initial & 31 == 31:
                    raise DecodeRefused("a chunk of an indefinite-length string is itself indefinite")
        items += 1
        if items > max_items:
            raise OverLimit(f"more than {max_items} CBOR items")
        major, info = initial >> 5, initial & 31
        if info < 24:
            arg = info
        elif info == 24:
            if pos >= size:
                raise DecodeRefused("the CBOR ends inside an item header")
            arg = data[pos]
            pos += 1
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > size:
                raise DecodeRefused("the CBOR ends inside an item header")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif info == 31:
            arg = -1  # indefinite length (or a break, refused below)
        else:
            raise DecodeRefused(f"reserved additional information {info} in a CBOR header")
        if major == 2 or major == 3:  # byte and text strings: the commonest item, first
            if arg >= 0:
                if arg > size - pos:
                    raise DecodeRefused(f"a string of {arg} bytes runs past the end of the CBOR")
                pos += arg
                alloc += arg + (_BYTES if major == 2 else _STR)
            else:
                if not limits.allow_indefinite:
                    raise DecodeRefused("an indefinite-length string")
                outer.append(remaining)
                remaining = _INDEF_BYTES if major == 2 else _INDEF_TEXT
                alloc += _BYTES if major == 2 else _STR
        elif major <= 1:  # unsigned and negative integers
            if arg < 0:
                raise DecodeRefused("an integer with indefinite length")
            alloc += _INT
        elif major <= 5:  # arrays and maps
            if len(outer) >= max_depth:  # ``outer`` holds the top level and each open container
                raise OverLimit(f"CBOR nested deeper than {max_depth}")
            outer.append(remaining)
            if arg < 0:
                if not limits.allow_indefinite:
                    raise DecodeRefused("an indefinite-length array or map")
                remaining = _INDEF_CONTAINER
                alloc += _LIST if major == 4 else _DICT
            else:
                count = arg if major == 4 else 2 * arg
                # Every item takes at least one byte: a count past the end is a lie told to make
                # the decoder preallocate.
                if count > size - pos:
                    raise DecodeRefused(f"a container of {count} items runs past the end of the CBOR")
                if count > max_items - items:
                    raise OverLimit(f"more than {max_items} CBOR items")
                remaining = count
                alloc += _LIST + 8 * arg if major == 4 else _DICT + _DICT_PAIR * arg
        elif major == 6:  # a tag: one item follows
            if not limits.allow_tags:
                raise DecodeRefused("a CBOR tag")
            if arg < 0:
                raise DecodeRefused("a tag with indefinite length")
            if len(outer) >= max_depth:
                raise OverLimit(f"CBOR nested deeper than {max_depth}")
            outer.append(remaining)
            remaining = 1
            alloc += _TAG
        else:  # major 7: simple values and floats
            if arg < 0:
                raise DecodeRefused("a break outside an indefinite-length item")
            if info >= 25:
                alloc += _FLOAT
        if alloc > max_alloc:
            raise OverLimit(f"decoding would take more than {max_alloc} bytes of memory")
    if pos != size:
        raise DecodeRefused(f"{size - pos} bytes after the CBOR item")
