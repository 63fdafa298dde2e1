"""A pickle interpreter of its own for files that may be hostile.

CPython's unpickler, even with ``find_class`` restricted, lets a file apply
``BUILD`` (``__setstate__`` or a ``__dict__``/slot update) to any object on
its stack, including objects it did not create and module-level ones, and
lets it call allow-listed constructors on arbitrarily large arguments. This
interpreter runs the opcodes itself, so every such step is a decision made
here:

* globals resolve only through the caller's allow-list;
* calls (``REDUCE``) go only to allow-listed callables, charged by the size
  of their arguments;
* ``SETITEM(S)``, ``APPEND(S)`` and ``ADDITEMS`` mutate only containers this
  load created; ``BUILD`` is accepted only on dicts this load created (torch
  state_dicts carry ``_metadata`` there) and its state is dropped: no
  attribute of any object is ever set;
* ``NEWOBJ``, ``INST``, ``OBJ``, extension codes and out-of-band buffers
  are refused;
* the total work (opcodes plus elements copied by calls) is bounded by a
  budget linear in the pickle's length, and the memo is a dict, so a file
  cannot make the interpreter allocate beyond its own size times a small
  factor.

Opcode meanings: CPython's Lib/pickle.py and Lib/pickletools.py.
"""

from __future__ import annotations

import _compat_pickle
import collections
import struct
from collections.abc import Callable, Mapping
from typing import Any

from fastlstm.errors import ModelFormatError

__all__ = ["Call", "RestrictedUnpickler", "unpickle_bytes"]

# Work is counted in units of about 16 bytes of memory: an opcode costs
# one, a new container or memo entry four, each element a call copies four.
# A load may spend WORK_PER_BYTE units per byte of pickle (plus a constant
# for tiny files), so what it allocates is linear in the pickle's length.
# Legitimate state_dicts spend under one unit per byte.
WORK_PER_BYTE = 4
WORK_CONSTANT = 1 << 16
CONTAINER_UNITS = 4
MAX_PROTOCOL = 5
# Tuples and frozensets hash and compare recursively in C: nesting is capped
# well below the interpreter's recursion limit.
MAX_NESTING = 100


class Call:
    """An allow-listed callable with how its arguments are charged.

    ``func(*args)`` runs only when the pickle REDUCEs it; ``copies`` says
    that the call copies its first argument's elements (``list(x)``), which
    the budget charges by length.
    """

    __slots__ = ("func", "copies", "name")

    def __init__(self, func: Callable[..., Any], name: str, copies: bool = False):
        object.__setattr__(self, "func", func)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "copies", copies)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("allow-listed callables are immutable")

    def __repr__(self) -> str:
        return f"<allow-listed {self.name}>"


class _Mark:
    __slots__ = ()


_MARK = _Mark()
_DICTS = (dict, collections.OrderedDict)
_SEQUENCES = (list, tuple, set, frozenset, dict, collections.OrderedDict, str, bytes)


class RestrictedUnpickler:
    """Runs one pickle held in ``data`` from ``pos`` to its STOP opcode.

    ``globals_`` maps ``(module, name)`` to a ``Call`` or to an immutable
    value (a string, a frozen object); ``persistent_load`` turns a
    persistent id into an object. ``load()`` returns the object; ``end``
    is then the offset just past STOP. ``advice`` follows the message that
    refuses a global.
    """

    def __init__(
        self,
        data: bytes | memoryview,
        where: str,
        globals_: Mapping[tuple[str, str], Any],
        persistent_load: Callable[[Any], Any] | None = None,
        pos: int = 0,
        advice: str = "",
    ) -> None:
        self.advice = advice
        self.data = memoryview(data).cast("B")
        self.where = where
        self.globals = globals_
        self.persistent_load = persistent_load
        self.pos = self.end = pos
        self.work_left = WORK_PER_BYTE * (len(self.data) - pos) + WORK_CONSTANT
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.owned: set[int] = set()  # id() of containers this load made
        self._keep: list[Any] = []  # keeps owned ids alive and unique
        self.nesting: dict[int, int] = {}  # id() of tuples/frozensets -> depth

    # --- reading ---------------------------------------------------------

    def fail(self, why: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {why} (at pickle byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if n < 0 or n > len(self.data) - self.pos:
            raise self.fail(f"truncated pickle: {n} bytes needed")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def line(self) -> bytes:
        data = self.data
        end = bytes(data[self.pos : self.pos + 4096]).find(b"\n")
        if end < 0:
            raise self.fail("unterminated text line in the pickle")
        out = bytes(data[self.pos : self.pos + end])
        self.pos += end + 1
        return out

    # --- bookkeeping -----------------------------------------------------

    def charge(self, units: int) -> None:
        self.work_left -= units
        if self.work_left < 0:
            raise self.fail(
                "the pickle asks for more work than its size allows "
                f"({WORK_PER_BYTE} units per byte)"
            )

    def own(self, obj: Any) -> Any:
        self.charge(CONTAINER_UNITS)
        self.owned.add(id(obj))
        self._keep.append(obj)
        return obj

    def immutable(self, obj: tuple | frozenset) -> tuple | frozenset:
        """Records the nesting depth of a new tuple or frozenset."""
        depth = 1
        nesting = self.nesting
        for item in obj:
            d = nesting.get(id(item), 0)
            if not d and isinstance(item, (tuple, frozenset)):
                d = 1  # a flat one: not recorded
            if d >= depth:
                depth = d + 1
        if depth > 1:
            if depth > MAX_NESTING:
                raise self.fail(f"tuples nest more than {MAX_NESTING} deep")
            nesting[id(obj)] = depth
            self._keep.append(obj)
        return obj

    def target(self, kinds: tuple, what: str) -> Any:
        """The container on top of the stack, which ``what`` (an opcode)
        changes: it must be one of ``kinds`` and created by this load."""
        obj = self.stack[-1] if self.stack else None
        if id(obj) not in self.owned or not isinstance(obj, kinds):
            raise self.fail(
                f"{what} applied to a {type(obj).__name__} the pickle did not "
                "create; refused"
            )
        return obj

    def pop(self) -> Any:
        if not self.stack:
            raise self.fail("pickle stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.fail("pickle MARK missing")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    # --- running ---------------------------------------------------------

    def load(self) -> Any:
        ops, data, size = _OPS, self.data, len(self.data)
        try:
            while True:
                self.work_left -= 1
                if self.work_left < 0:
                    self.charge(0)  # raises
                if self.pos >= size:
                    raise self.fail("truncated pickle: no STOP opcode")
                code = data[self.pos]
                self.pos += 1
                handler = ops.get(code)
                if handler is None:
                    raise self.fail(f"pickle opcode {code:#04x} is not allowed")
                if handler is _stop:
                    result = self.pop()
                    self.end = self.pos
                    return result
                handler(self)
        except ModelFormatError:
            raise
        except (
            TypeError,
            ValueError,
            OverflowError,
            UnicodeDecodeError,
            RecursionError,
            MemoryError,
        ) as exc:
            raise self.fail(f"corrupt pickle data: {_brief(exc)}") from None

    def reduce(self, func: Any, args: Any) -> Any:
        if not isinstance(func, Call):
            raise self.fail(f"the pickle calls a {type(func).__name__}; refused")
        if not isinstance(args, tuple):
            raise self.fail(f"{func.name} called with {type(args).__name__} args")
        if func.copies and args:
            source = args[0]
            if not isinstance(source, _SEQUENCES):
                raise self.fail(
                    f"{func.name} of a {type(source).__name__}; containers only"
                )
            self.charge(CONTAINER_UNITS * len(source))
        self.charge(len(args))
        result = func.func(*args)
        if isinstance(result, (list, dict, set)):
            self.own(result)
        elif isinstance(result, (tuple, frozenset)):
            self.immutable(result)
        return result


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 200 else text[:197] + "..."


def _stop(m: RestrictedUnpickler) -> None:  # handled in load()
    raise AssertionError


def _push(value: Any) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        m.stack.append(value)

    return op


def _proto(m: RestrictedUnpickler) -> None:
    proto = m.take(1)[0]
    if proto > MAX_PROTOCOL:
        raise m.fail(f"unsupported pickle protocol {proto}")


def _frame(m: RestrictedUnpickler) -> None:
    size = m.uint(8)
    if size > len(m.data) - m.pos:
        raise m.fail(f"pickle frame of {size} bytes runs past the data")


def _global_text(m: RestrictedUnpickler) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    m.stack.append(_resolve(m, module, name))


def _stack_global(m: RestrictedUnpickler) -> None:
    name, module = m.pop(), m.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise m.fail("STACK_GLOBAL needs two strings")
    m.stack.append(_resolve(m, module, name))


def _resolve(m: RestrictedUnpickler, module: str, name: str) -> Any:
    try:
        return m.globals[(module, name)]
    except KeyError:
        pass
    # name it as Python 3 would import it (protocol 2 writes Python 2 names)
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    raise m.fail(f"refusing to load global '{module}.{name}'. {m.advice}")


def _int_text(m: RestrictedUnpickler) -> None:
    text = m.line()
    if text in (b"00", b"01"):
        m.stack.append(text == b"01")
        return
    m.stack.append(_bounded_int(m, text.rstrip(b"L")))


def _bounded_int(m: RestrictedUnpickler, text: bytes) -> int:
    if len(text) > 4000:
        raise m.fail("integer literal too long")
    return int(text)


def _long_bytes(width: int) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        n = m.uint(width)
        m.stack.append(int.from_bytes(m.take(n), "little", signed=True))

    return op


def _fixed(fmt: str, size: int) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        m.stack.append(struct.unpack(fmt, m.take(size))[0])

    return op


def _text(width: int, as_bytes: bool = False) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        raw = m.take(m.uint(width))
        m.stack.append(bytes(raw) if as_bytes else str(raw, "utf-8"))

    return op


def _string_text(m: RestrictedUnpickler) -> None:
    raw = m.line()
    if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
        raise m.fail("malformed STRING opcode")
    m.stack.append(raw[1:-1].decode("unicode_escape"))


def _unicode_text(m: RestrictedUnpickler) -> None:
    m.stack.append(m.line().decode("raw-unicode-escape"))


def _float_text(m: RestrictedUnpickler) -> None:
    m.stack.append(float(m.line()))


def _tuple_n(n: int) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        if len(m.stack) < n:
            raise m.fail("pickle stack underflow")
        items = tuple(m.stack[len(m.stack) - n :])
        del m.stack[len(m.stack) - n :]
        m.stack.append(m.immutable(items))

    return op


def _empty(kind: type) -> Callable[[RestrictedUnpickler], None]:
    return lambda m: m.stack.append(m.own(kind()))


def _mark(m: RestrictedUnpickler) -> None:
    m.marks.append(m.stack)
    m.stack = []


def _tuple(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    m.stack.append(m.immutable(tuple(items)))


def _list(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()  # before m.stack is looked up: pop_mark replaces it
    m.stack.append(m.own(items))


def _frozenset(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    m.stack.append(m.immutable(frozenset(items)))


def _dict(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise m.fail("DICT with an odd number of items")
    m.stack.append(m.own(dict(zip(items[::2], items[1::2]))))


def _pop(m: RestrictedUnpickler) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _pop_mark(m: RestrictedUnpickler) -> None:
    m.pop_mark()


def _dup(m: RestrictedUnpickler) -> None:
    if not m.stack:
        raise m.fail("pickle stack underflow")
    m.stack.append(m.stack[-1])


def _get(width: int | None) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        key = _memo_key(m, width)
        try:
            m.stack.append(m.memo[key])
        except KeyError:
            raise m.fail(f"pickle memo slot {key} is empty") from None

    return op


def _put(width: int | None) -> Callable[[RestrictedUnpickler], None]:
    def op(m: RestrictedUnpickler) -> None:
        key = _memo_key(m, width)
        if not m.stack:
            raise m.fail("pickle stack underflow")
        if key not in m.memo:
            m.charge(CONTAINER_UNITS)
        m.memo[key] = m.stack[-1]

    return op


def _memo_key(m: RestrictedUnpickler, width: int | None) -> int:
    if width is None:
        return _bounded_int(m, m.line())
    return m.uint(width)


def _memoize(m: RestrictedUnpickler) -> None:
    if not m.stack:
        raise m.fail("pickle stack underflow")
    m.charge(CONTAINER_UNITS)
    m.memo[len(m.memo)] = m.stack[-1]


def _append(m: RestrictedUnpickler) -> None:
    value = m.pop()
    m.target((list,), "APPEND").append(value)


def _appends(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    m.target((list,), "APPENDS").extend(items)


def _setitem(m: RestrictedUnpickler) -> None:
    value, key = m.pop(), m.pop()
    m.target(_DICTS, "SETITEM")[key] = value


def _setitems(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    target = m.target(_DICTS, "SETITEMS")
    if len(items) % 2:
        raise m.fail("SETITEMS with an odd number of items")
    for k in range(0, len(items), 2):
        target[items[k]] = items[k + 1]


def _additems(m: RestrictedUnpickler) -> None:
    items = m.pop_mark()
    m.target((set,), "ADDITEMS").update(items)


def _build(m: RestrictedUnpickler) -> None:
    state = m.pop()
    m.target(_DICTS, "BUILD")
    if not isinstance(state, (dict, tuple)) and state is not None:
        raise m.fail(f"BUILD with a {type(state).__name__} state")
    # The state (an OrderedDict's _metadata) is not needed and never applied.


def _reduce(m: RestrictedUnpickler) -> None:
    args = m.pop()
    func = m.pop()
    m.stack.append(m.reduce(func, args))


def _persid_text(m: RestrictedUnpickler) -> None:
    _persistent(m, m.line().decode("ascii"))


def _binpersid(m: RestrictedUnpickler) -> None:
    _persistent(m, m.pop())


def _persistent(m: RestrictedUnpickler, pid: Any) -> None:
    if m.persistent_load is None:
        raise m.fail("the pickle refers to external data it may not use")
    m.stack.append(m.persistent_load(pid))


_OPS: dict[int, Callable[[RestrictedUnpickler], None]] = {
    0x80: _proto,
    0x95: _frame,
    ord("."): _stop,
    ord("("): _mark,
    ord("0"): _pop,
    ord("1"): _pop_mark,
    ord("2"): _dup,
    ord("N"): _push(None),
    0x88: _push(True),
    0x89: _push(False),
    ord("I"): _int_text,
    ord("L"): lambda m: m.stack.append(_bounded_int(m, m.line().rstrip(b"L"))),
    ord("J"): _fixed("<i", 4),
    ord("K"): _fixed("<B", 1),
    ord("M"): _fixed("<H", 2),
    0x8A: _long_bytes(1),
    0x8B: _long_bytes(4),
    ord("F"): _float_text,
    ord("G"): _fixed(">d", 8),
    ord("S"): _string_text,
    ord("T"): _text(4),  # BINSTRING, decoded as Python 3 does with utf-8
    ord("U"): _text(1),
    ord("V"): _unicode_text,
    ord("X"): _text(4),
    0x8C: _text(1),
    0x8D: _text(8),
    ord("B"): _text(4, as_bytes=True),
    ord("C"): _text(1, as_bytes=True),
    0x8E: _text(8, as_bytes=True),
    ord(")"): _push(()),
    ord("t"): _tuple,
    0x85: _tuple_n(1),
    0x86: _tuple_n(2),
    0x87: _tuple_n(3),
    ord("]"): _empty(list),
    ord("l"): _list,
    ord("}"): _empty(dict),
    ord("d"): _dict,
    0x8F: _empty(set),
    0x91: _frozenset,
    ord("a"): _append,
    ord("e"): _appends,
    ord("s"): _setitem,
    ord("u"): _setitems,
    0x90: _additems,
    ord("b"): _build,
    ord("R"): _reduce,
    ord("c"): _global_text,
    0x93: _stack_global,
    ord("P"): _persid_text,
    ord("Q"): _binpersid,
    ord("g"): _get(None),
    ord("h"): _get(1),
    ord("j"): _get(4),
    ord("p"): _put(None),
    ord("q"): _put(1),
    ord("r"): _put(4),
    0x94: _memoize,
}


def unpickle_bytes(
    data: bytes | memoryview,
    where: str,
    globals_: Mapping[tuple[str, str], Any],
    persistent_load: Callable[[Any], Any] | None = None,
    pos: int = 0,
    advice: str = "",
) -> tuple[Any, int]:
    """The object of the pickle at ``data[pos:]`` and the offset past it;
    ``advice`` follows the message that refuses a global."""
    vm = RestrictedUnpickler(data, where, globals_, persistent_load, pos, advice)
    return vm.load(), vm.end
