"""Read the CIFAR python batches without running any pickle code.

The pickle is walked opcode by opcode (``pickletools.genops`` only parses, it never calls
anything) on a small stack machine of our own that understands plain containers, strings,
numbers and the two globals a NumPy array needs (``numpy...._reconstruct`` and
``numpy.dtype``, plus ``_codecs.encode`` that Python 3 uses for ``bytes`` at protocol 2).
Nothing is imported or called: an array becomes an ``ArrayRef`` that records its shape,
dtype and where its raw bytes sit in the file, so the caller can memory-map them instead of
holding every batch in memory. Any other global (``os.system``, ``builtins.eval``...) is
refused with an error naming it.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass

import numpy as np

from ipmix_cli.common.errors import IpmixError

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_NDARRAY = {("numpy", "ndarray")}
_DTYPE = {("numpy", "dtype")}
_CODECS_ENCODE = {("_codecs", "encode")}
_ALLOWED = _RECONSTRUCT | _NDARRAY | _DTYPE | _CODECS_ENCODE

# Width of the length field that follows each string opcode, so a payload's file offset is
# (opcode position + 1 + width).
_LEN_WIDTH = {
    "SHORT_BINSTRING": 1, "BINSTRING": 4, "SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8,
    "BYTEARRAY8": 8,
}


class UnsafePickle(IpmixError):
    pass


@dataclass
class Raw:
    """A byte string from the file: its value (kept only when small) and where it lies."""

    offset: int
    length: int
    value: bytes


@dataclass
class ArrayRef:
    """A NumPy array described by the pickle; `data` is a Raw (in-file bytes) or bytes."""

    shape: tuple
    dtype: np.dtype
    data: object
    fortran: bool = False

    def load(self, path=None, mmap: bool = True) -> np.ndarray:
        if isinstance(self.data, Raw) and mmap and path is not None:
            arr = np.memmap(path, dtype=self.dtype, mode="r", offset=self.data.offset, shape=self.shape,
                            order="F" if self.fortran else "C")
            return arr
        raw = self.data.value if isinstance(self.data, Raw) else self.data
        arr = np.frombuffer(raw, dtype=self.dtype)
        return arr.reshape(self.shape, order="F" if self.fortran else "C")


class _Global:
    def __init__(self, module: str, name: str):
        self.key = (module, name)


class _Mark:
    pass


_MARK = _Mark()


def _as_bytes(value) -> bytes:
    if isinstance(value, Raw):
        return value.value
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise UnsafePickle(f"unexpected value of type {type(value).__name__} where bytes were expected")


def _text(value) -> str:
    if isinstance(value, Raw):
        return value.value.decode("latin-1")
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _make_dtype(args) -> np.dtype:
    name = _text(args[0])
    if not isinstance(name, str) or len(name) > 8 or not name[:1].isalpha():
        raise UnsafePickle(f"unsupported dtype {name!r}")
    return np.dtype(name)


def _apply_dtype_state(dt: np.dtype, state) -> np.dtype:
    # state = (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    if isinstance(state, tuple) and len(state) >= 2:
        order = _text(state[1])
        if order in ("<", ">") and dt.itemsize > 1:
            return dt.newbyteorder(order)
    return dt


def _reduce(func, args):
    if not isinstance(func, _Global):
        raise UnsafePickle("call of a non-global object refused")
    if func.key in _RECONSTRUCT:
        return ArrayRef(shape=(0,), dtype=np.dtype("u1"), data=b"")
    if func.key in _DTYPE:
        return _make_dtype(args)
    if func.key in _CODECS_ENCODE:
        text, encoding = args[0], (_text(args[1]) if len(args) > 1 else "utf-8")
        if encoding not in ("latin1", "latin-1", "iso-8859-1"):
            raise UnsafePickle(f"unsupported encoding {encoding!r}")
        return _text(text).encode("latin-1")
    raise UnsafePickle(f"global {func.key[0]}.{func.key[1]} refused")


def _build(obj, state):
    if isinstance(obj, ArrayRef):
        # ndarray.__setstate__: (version, shape, dtype, is_fortran, rawdata)
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickle("unexpected ndarray state")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickle("ndarray of Python objects refused")
        shape = tuple(int(s) for s in shape)
        if isinstance(data, (str, bytes)):
            data = _as_bytes(data)
        elif not isinstance(data, Raw):
            raise UnsafePickle("ndarray data must be a byte string")
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = data.length if isinstance(data, Raw) else len(data)
        if have != n:
            raise UnsafePickle(f"ndarray data holds {have} bytes, shape needs {n}")
        return ArrayRef(shape=shape, dtype=dtype, data=data, fortran=bool(fortran))
    if isinstance(obj, np.dtype):
        return _apply_dtype_state(obj, state)
    raise UnsafePickle(f"BUILD on {type(obj).__name__} refused")


def load(path, keep_limit: int = 1 << 16):
    """Parse a pickle file into plain Python values; arrays become `ArrayRef`.

    Byte strings longer than `keep_limit` keep their file offset (for memory-mapping) and
    their value (needed only when they are not an array's payload).
    """
    stack: list = []
    memo: dict = {}
    with open(path, "rb") as f:
        try:
            for op, arg, pos in pickletools.genops(f):
                name = op.name
                if name in ("PROTO", "FRAME"):
                    continue
                if name == "STOP":
                    break
                if name == "MARK":
                    stack.append(_MARK)
                elif name in _LEN_WIDTH:
                    raw = arg.encode("latin-1") if isinstance(arg, str) else bytes(arg)
                    stack.append(Raw(pos + 1 + _LEN_WIDTH[name], len(raw), raw))
                elif name in ("STRING", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"):
                    stack.append(arg)
                elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                              "FLOAT", "BINFLOAT"):
                    stack.append(arg)
                elif name == "NONE":
                    stack.append(None)
                elif name in ("NEWTRUE", "NEWFALSE"):
                    stack.append(name == "NEWTRUE")
                elif name in ("EMPTY_DICT",):
                    stack.append({})
                elif name in ("EMPTY_LIST",):
                    stack.append([])
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    items = tuple(stack[-n:])
                    del stack[-n:]
                    stack.append(items)
                elif name in ("TUPLE", "LIST", "DICT"):
                    k = _pop_mark(stack)
                    items = stack[k + 1:]
                    del stack[k:]
                    if name == "TUPLE":
                        stack.append(tuple(items))
                    elif name == "LIST":
                        stack.append(list(items))
                    else:
                        stack.append({_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})
                elif name == "APPEND":
                    v = stack.pop()
                    _list(stack[-1]).append(v)
                elif name == "APPENDS":
                    k = _pop_mark(stack)
                    items = stack[k + 1:]
                    del stack[k:]
                    _list(stack[-1]).extend(items)
                elif name == "SETITEM":
                    v, key = stack.pop(), stack.pop()
                    _dict(stack[-1])[_key(key)] = v
                elif name == "SETITEMS":
                    k = _pop_mark(stack)
                    items = stack[k + 1:]
                    del stack[k:]
                    d = _dict(stack[-1])
                    for i in range(0, len(items), 2):
                        d[_key(items[i])] = items[i + 1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = stack[-1]
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo[arg])
                elif name == "GLOBAL":
                    module, _, attr = arg.partition(" ")
                    stack.append(_check_global(module, attr))
                elif name == "STACK_GLOBAL":
                    attr, module = stack.pop(), stack.pop()
                    stack.append(_check_global(_text(module), _text(attr)))
                elif name == "REDUCE":
                    args, func = stack.pop(), stack.pop()
                    stack.append(_reduce(func, args if isinstance(args, tuple) else ()))
                elif name == "BUILD":
                    state = stack.pop()
                    stack[-1] = _build(stack[-1], state)
                else:
                    raise UnsafePickle(f"pickle opcode {name} refused")
        except UnsafePickle:
            raise
        except (ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
            raise UnsafePickle(f"malformed pickle ({exc})") from None
    if len(stack) != 1:
        raise UnsafePickle("malformed pickle (stack not balanced)")
    return _drop_large(stack[0], keep_limit)


def _check_global(module: str, attr: str) -> _Global:
    if (module, attr) not in _ALLOWED:
        raise UnsafePickle(f"global {module}.{attr} refused")
    return _Global(module, attr)


def _pop_mark(stack) -> int:
    for k in range(len(stack) - 1, -1, -1):
        if stack[k] is _MARK:
            return k
    raise UnsafePickle("malformed pickle (no mark)")


def _key(k):
    if isinstance(k, Raw):
        return k.value.decode("latin-1")
    if isinstance(k, bytes):
        return k.decode("latin-1")
    if isinstance(k, (str, int)):
        return k
    raise UnsafePickle(f"dict key of type {type(k).__name__} refused")


def _list(obj):
    if not isinstance(obj, list):
        raise UnsafePickle("APPEND to a non-list refused")
    return obj


def _dict(obj):
    if not isinstance(obj, dict):
        raise UnsafePickle("SETITEM on a non-dict refused")
    return obj


def _drop_large(value, limit):
    if isinstance(value, dict):
        return {k: _drop_large(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_large(v, limit) for v in value]
    if isinstance(value, tuple):
        return tuple(_drop_large(v, limit) for v in value)
    if isinstance(value, Raw):
        return value.value.decode("latin-1")
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, ArrayRef) and isinstance(value.data, Raw):
        # Keep only the location of a large payload; small ones stay in memory.
        if value.data.length > limit:
            value.data = Raw(value.data.offset, value.data.length, b"")
    return value
