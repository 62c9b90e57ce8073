"""Read pickles that hold numeric numpy arrays, and nothing else.

A pickle is a program: `pickle.load` calls whatever callables the file names. This loader runs the
file on Python's pure-Python unpickler with every way of reaching code closed:
- `find_class` maps exact `(module, name)` pairs to stand-ins of our own; nothing is imported by name;
- the stand-ins accept only what numeric arrays need: a plain bool/int/uint/float dtype (no fields,
  sub-arrays or objects), a shape whose size matches the bytes given, and a capped size;
- BUILD (attribute setting) works only on those stand-ins; persistent ids, extension codes and the
  class-instantiating opcodes are refused.
Every refusal or malformed input raises `UnsafePickleError`, which names the file and what was refused.
"""

import gzip
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

MAX_FILE_BYTES = 4 << 30  # after decompression; the full MNIST as float64 needs under 0.5 GiB
MAX_ARRAY_BYTES = 2 << 30
MAX_NDIM = 4
NUMERIC_KINDS = "biuf"  # bool, signed int, unsigned int, float


class UnsafePickleError(ValueError):
    """A pickle was refused: it holds something other than numeric numpy arrays, or is malformed."""

    exit_code = 2  # a bad file of the user's (mnist_lab.errors)


class _Refused(Exception):
    """Raised inside the unpickler; turned into UnsafePickleError with the file's name."""


def _plain_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"dtype {dtype!s} is not a plain bool/int/uint/float dtype")
    return dtype


class _DtypeStandIn:
    """What `numpy.dtype(name, align, copy)` in the pickle builds; BUILD may set only its byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or len(name) > 8:
            raise _Refused(f"numpy.dtype called with {name!r}, not a short type code such as 'u1'")
        try:
            self.dtype = _plain_dtype(np.dtype(name))
        except TypeError as error:
            raise _Refused(f"numpy.dtype({name!r}) is not a dtype: {error}") from None

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise _Refused(f"unexpected numpy dtype state {state!r:.200}")
        byteorder, subarray, names, fields, _elsize, _alignment, flags = state[1:8]
        metadata = state[8] if len(state) == 9 else None
        if subarray is not None or names is not None or fields is not None or flags != 0 or metadata:
            raise _Refused(f"dtype state with fields, sub-arrays, flags or metadata: {state!r:.200}")
        if byteorder not in ("<", ">", "|", "="):
            raise _Refused(f"dtype byte order {byteorder!r}")
        if byteorder in "<>":
            self.dtype = self.dtype.newbyteorder(byteorder)


class _ArrayStandIn:
    """What `_reconstruct(ndarray, (0,), b'b')` builds; BUILD then fills it from (shape, dtype, bytes)."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"unexpected ndarray state of type {type(state).__name__}")
        if len(state) == 5:  # (version, shape, dtype, is_fortran, data); old numpy left out the version
            if state[0] != 1:
                raise _Refused(f"ndarray state version {state[0]!r}")
            state = state[1:]
        shape, dtype, is_fortran, data = state
        if isinstance(data, str):  # Python 2 pickles loaded with encoding='latin1'
            data = data.encode("latin1")
        self.array = _array_from_bytes(data, dtype, shape, "F" if is_fortran is True else "C")


def _array_from_bytes(data: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, _DtypeStandIn):
        raise _Refused(f"array dtype given as {type(dtype).__name__}, not numpy.dtype")
    if not isinstance(data, bytes | bytearray):
        raise _Refused(f"array data given as {type(data).__name__}, not bytes")
    if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM):
        raise _Refused(f"array shape {shape!r:.100} is not a tuple of at most {MAX_NDIM} sizes")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"array shape {shape!r:.100} holds something other than non-negative ints")
    nbytes = math.prod(shape) * dtype.dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise _Refused(f"array of shape {shape} and dtype {dtype.dtype} needs {nbytes:,} bytes")
    if nbytes != len(data):
        raise _Refused(
            f"array of shape {shape} and dtype {dtype.dtype} given {len(data):,} bytes, not {nbytes:,}"
        )
    if order not in ("C", "F"):
        raise _Refused(f"array order {order!r}")
    return np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order=order).copy(order="K")


_NDARRAY = object()  # stands for numpy.ndarray: only ever passed to _reconstruct


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStandIn:
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused("numpy _reconstruct called with arguments other than (ndarray, (0,), b'b')")
    return _ArrayStandIn()


def _frombuffer(data: Any, dtype: Any, shape: Any, order: Any) -> _ArrayStandIn:
    stand_in = _ArrayStandIn()
    stand_in.array = _array_from_bytes(data, dtype, shape, order)
    return stand_in


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocols 0-2 spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode called with ({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Protocols 0-2 spell an empty array's data as bytes(), a call with no arguments.
    if args:
        raise _Refused("bytes() called with arguments")
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeStandIn,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # numpy 1, protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # numpy 2, protocol 5
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _ArrayUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"the pickle names {module}.{name}, which is not part of a numpy array") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("the pickle uses persistent ids")

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, _ArrayStandIn | _DtypeStandIn):
            raise _Refused(f"the pickle sets the state of a {type(target).__name__}")
        target.__setstate__(state)

    def refuse_opcode(self) -> None:
        raise _Refused("the pickle uses extension codes or instantiates classes")

    dispatch[pickle.BUILD[0]] = load_build
    for _opcode in (
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
        pickle.INST,
        pickle.OBJ,
        pickle.NEWOBJ,
        pickle.NEWOBJ_EX,
    ):
        dispatch[_opcode[0]] = refuse_opcode


def _finish(obj: Any) -> Any:
    """Replace array stand-ins by their arrays inside nested tuples and lists."""
    if isinstance(obj, _ArrayStandIn):
        if obj.array is None:
            raise _Refused("an ndarray was created but never filled")
        return obj.array
    if isinstance(obj, tuple | list):
        return type(obj)(_finish(item) for item in obj)
    if isinstance(obj, int | float | str | bytes | type(None)):
        return obj
    raise _Refused(f"the pickle holds a {type(obj).__name__}, not only arrays")


def _read_capped(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw = file.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise _Refused(f"more than {MAX_FILE_BYTES:,} bytes (after decompression)")
    return raw


def load_arrays(path: str | Path) -> Any:
    """Load `path` (.pkl, or .pkl.gz) holding nested tuples/lists of numeric numpy arrays; refuse anything else."""
    path = Path(path)
    try:
        raw = _read_capped(path)
        if not raw:
            raise _Refused("the file is empty")
        unpickler = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1")
        return _finish(unpickler.load())
    except _Refused as error:
        raise UnsafePickleError(f"{path}: refused to load: {error}") from None
    except (OSError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise UnsafePickleError(f"{path}: not a readable pickle: {error}") from None
    except Exception as error:  # a malformed pickle can raise almost anything from the unpickler
        raise UnsafePickleError(
            f"{path}: not a valid pickle of numpy arrays: {type(error).__name__}: {error}"
        ) from None
