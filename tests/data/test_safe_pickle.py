"""Hostile pickles, each loaded in process and in a subprocess: refused with one clear error, no crash, no payload
run."""

import builtins
import copyreg
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT

LOADER = """
import sys
from mnist_lab.data.safe_pickle import UnsafePickleError, load_arrays
try:
    load_arrays(sys.argv[1])
except UnsafePickleError as error:
    print("REFUSED:", error)
else:
    print("LOADED")
"""


class Reduces:
    """Pickles as `callable(*args)`, optionally followed by a BUILD with `state`."""

    def __init__(self, callable_, args, state=None):
        self.reduced = (callable_, args) if state is None else (callable_, args, state)

    def __reduce__(self):
        return self.reduced


def stack_global(module: str, name: str, args: tuple = ()) -> bytes:
    """A protocol-4 pickle calling module.name(*args) through STACK_GLOBAL (dotted names allowed)."""
    body = b""
    for text in (module, name):
        raw = text.encode()
        body += b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE
    body += b"\x93"  # STACK_GLOBAL
    body += pickle.dumps(args, protocol=4)[2:-1]  # the args tuple without PROTO and STOP
    return b"\x80\x04" + body + b"R."  # REDUCE, STOP


def hostile_files(tmp: Path, marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the refusal must say)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    good = np.zeros((3, 28, 28), dtype=np.uint8)
    truncated = pickle.dumps(((good, np.zeros(3, dtype=np.int64)), (good, np.zeros(3, dtype=np.int64))))
    copyreg.add_extension("posix", "system", 0xF0)
    try:
        ext1 = pickle.dumps(Reduces(os.system, (f"touch {marker}",)), protocol=2)
    finally:
        copyreg.remove_extension("posix", "system", 0xF0)
    dtype_fields_state = (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0)}, 1, 1, 0)
    return {
        "os_system": (pickle.dumps(Reduces(os.system, (f"touch {marker}",))), "posix.system"),
        "eval_nested": (
            pickle.dumps(((good, Reduces(builtins.eval, (touch,))), (good, good))),
            "builtins.eval",
        ),
        "numpy_runstring": (
            stack_global("numpy.testing._private.utils", "runstring", (touch, {})),
            "runstring",
        ),
        "numpy_builtins": (stack_global("numpy", "__builtins__.eval", (touch,)), "numpy.__builtins__.eval"),
        "dotted_name": (
            stack_global("numpy", "core.multiarray._reconstruct", ()),
            "core.multiarray._reconstruct",
        ),
        "object_array": (pickle.dumps(np.array([1, "x"], dtype=object)), "dtype object"),
        "huge_shape": (
            pickle.dumps(np.zeros(4, np.uint8), protocol=2).replace(
                b"K\x04\x85", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85"
            ),
            "needs 1,000,000,000,000 bytes",
        ),
        "void_object_field": (pickle.dumps(np.zeros(2, dtype=[("p", "O")])), "not a plain"),
        "build_on_dtype": (
            pickle.dumps(Reduces(np.dtype, ("u1", False, True), dtype_fields_state)),
            "fields",
        ),
        "ext1_opcode": (ext1, "extension codes"),
        "truncated": (truncated[: len(truncated) // 2], "not a valid pickle"),
        "empty": (b"", "empty"),
        "not_a_pickle": (b"%PDF-1.7 definitely not a pickle\n", "not a valid pickle"),
    }


CASES = list(hostile_files(Path("/tmp"), Path("/tmp/x")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_pickle_is_refused_in_process(tmp_path: Path, case: str) -> None:
    from mnist_lab.data.safe_pickle import UnsafePickleError, load_arrays

    marker = tmp_path / "payload-ran"
    content, expected = hostile_files(tmp_path, marker)[case]
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(content)
    with pytest.raises(UnsafePickleError, match=f"^{path}: ") as refused:
        load_arrays(path)
    assert expected in str(refused.value) and not marker.exists()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow  # a Python process per case: what the in-process test cannot see, a crash of the interpreter
def test_hostile_pickle_is_refused_in_a_subprocess(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "payload-ran"
    content, expected = hostile_files(tmp_path, marker)[case]
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]  # no crash, no uncaught error
    assert done.stdout.startswith(f"REFUSED: {path}:"), done.stdout + done.stderr
    assert expected in done.stdout
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_benign_arrays_of_every_protocol_load_identical(tmp_path: Path, protocol: int) -> None:
    from mnist_lab.data.safe_pickle import load_arrays

    arrays = (
        np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        np.array([3, 7], dtype=np.int64),
        np.asfortranarray(np.linspace(0, 1, 12, dtype=">f4").reshape(3, 4)),
        np.array([True, False]),
        np.zeros((0, 784), dtype=np.float64),
    )
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    loaded = load_arrays(path)
    assert len(loaded) == len(arrays)
    for got, want in zip(loaded, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def numpy_1_spelling(raw: bytes) -> bytes:
    """A numpy 2 pickle rewritten with numpy 1's module names (numpy.core instead of numpy._core)."""
    out = raw
    for new_name in (b"numpy.core.multiarray", b"numpy.core.numeric"):
        old_name = new_name.replace(b"numpy.core", b"numpy._core")
        out = out.replace(old_name + b"\n", new_name + b"\n")  # GLOBAL (protocols 0-3)
        out = out.replace(
            bytes([len(old_name)]) + old_name, bytes([len(new_name)]) + new_name
        )  # SHORT_BINUNICODE
    if out[2:3] == b"\x95":  # protocols 4-5 frame their opcodes: the frame is now shorter
        frame = int.from_bytes(out[3:11], "little") - (len(raw) - len(out))
        out = out[:3] + frame.to_bytes(8, "little") + out[11:]
    return out


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_1_spelling_loads(tmp_path: Path, protocol: int) -> None:
    from mnist_lab.data.safe_pickle import load_arrays

    array = np.arange(10, dtype=np.int16)
    raw = numpy_1_spelling(pickle.dumps(array, protocol=protocol))
    assert b"numpy.core." in raw and b"numpy._core" not in raw
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(raw)
    assert np.array_equal(load_arrays(path), array)


def python2_pickle(array: np.ndarray) -> bytes:
    """`array` as Python 2's cPickle (protocol 2) wrote it with numpy 1: byte strings, not unicode, for text.

    The classic mnist.pkl.gz looks like this; Python 3 reads its strings as latin1 text.
    """

    def text(value: bytes) -> bytes:  # SHORT_BINSTRING (Python 2 str)
        return b"U" + bytes([len(value)]) + value

    def int4(value: int) -> bytes:  # BININT
        return b"J" + value.to_bytes(4, "little", signed=True)

    dtype = (
        b"cnumpy\ndtype\n" + text(array.dtype.str[1:].encode()) + b"\x89\x88\x87R"  # dtype('u1', False, True)
        + b"(" + int4(3) + text(array.dtype.str[:1].encode()) + b"NNN" + int4(-1) + int4(-1) + int4(0) + b"tb"
    )  # fmt: skip
    shape = b"(" + b"".join(int4(n) for n in array.shape) + b"t"
    data = array.tobytes()
    state = b"(" + int4(1) + shape + dtype + b"\x89" + b"T" + len(data).to_bytes(4, "little") + data + b"t"
    return (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + int4(0) + b"\x85" + text(b"b") + b"\x87R" + state + b"b."
    )  # fmt: skip


def test_python_2_numpy_1_pickle_loads_with_latin1(tmp_path: Path) -> None:
    from mnist_lab.data.safe_pickle import load_arrays

    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # bytes >= 0x80 included
    path = tmp_path / "py2.pkl"
    path.write_bytes(python2_pickle(array))
    loaded = load_arrays(path)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, array)
    floats = np.linspace(0, 1, 10, dtype="<f4")
    path.write_bytes(python2_pickle(floats))
    assert np.array_equal(load_arrays(path), floats)


def test_persistent_ids_are_refused(tmp_path: Path) -> None:
    import io

    from mnist_lab.data.safe_pickle import UnsafePickleError, load_arrays

    class External(pickle.Pickler):
        def persistent_id(self, obj):
            return "outside" if isinstance(obj, np.ndarray) else None

    buffer = io.BytesIO()
    External(buffer, protocol=2).dump((np.zeros(3),))
    path = tmp_path / "persistent.pkl"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        load_arrays(path)
