"""The wire codec: openpi's encoding both ways, bounded decoding, and no pickle anywhere."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import msgpack
import numpy as np
import pytest

import aloe
from aloe.serve.wire import Limits, WireError, pack, unpack


def openpi_pack(obj):
    """openpi-client's `msgpack_numpy.packb`, as its source writes arrays (bytes keys)."""

    def default(x):
        if isinstance(x, np.ndarray):
            return {
                b"__ndarray__": True,
                b"data": x.tobytes(),
                b"dtype": x.dtype.str,
                b"shape": x.shape,
            }
        if isinstance(x, np.generic):
            return {b"__npgeneric__": True, b"data": x.item(), b"dtype": x.dtype.str}
        return x

    return msgpack.packb(obj, default=default)


def openpi_unpack(data):
    def hook(m):
        if b"__ndarray__" in m:
            return np.ndarray(buffer=m[b"data"], dtype=np.dtype(m[b"dtype"]), shape=m[b"shape"])
        return m

    return msgpack.unpackb(data, object_hook=hook)


def test_round_trip_and_openpi_encoding_both_ways():
    msg = {
        "observation.state": np.arange(39, dtype=np.float32),
        "prompt": "pick",
        "img": np.zeros((4, 4, 3), np.uint8),
        "n": np.int64(3),
        "nested": {"x": [1, 2.5]},
    }
    for data in (pack(msg), openpi_pack(msg)):
        back = unpack(data)
        assert back["prompt"] == "pick" and back["nested"] == {"x": [1, 2.5]} and back["n"] == 3
        assert back["observation.state"].dtype == np.float32
        np.testing.assert_array_equal(back["observation.state"], msg["observation.state"])
        assert back["img"].shape == (4, 4, 3) and back["img"].flags.writeable
    theirs = openpi_unpack(pack({"actions": np.ones((10, 4), np.float32)}))
    assert theirs["actions"].shape == (10, 4) and theirs["actions"].dtype == np.float32


def _array(dtype="<f4", shape=(2,), data=b"\0" * 8):
    return msgpack.packb(
        {"a": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": list(shape)}}
    )


@pytest.mark.parametrize(
    "data, says",
    [
        (_array(dtype="|O", data=b"\0" * 16), "dtype"),
        (_array(dtype=">f4"), "dtype"),
        (_array(dtype="<c8", data=b"\0" * 16), "dtype"),
        (_array(dtype="|V8"), "dtype"),
        (_array(shape=(-1,)), "shape"),
        (_array(shape=(2.0,)), "shape"),
        (_array(shape=(1,) * 9, data=b"\0" * 4), "shape"),
        (_array(shape=(2**20, 2**20)), "elements"),
        (_array(data=b"\0" * 7), "bytes"),
        (msgpack.packb(msgpack.ExtType(1, b"\x80\x04N.")), "ext"),
        (msgpack.packb({1: 2}), "msgpack"),
        (msgpack.packb({b"key": 2}), "strings"),
        (msgpack.packb([1, 2]), "map"),
        (b"\x91" * 5000, "msgpack"),
        (b"\xc1", "msgpack"),
        (pack({"a": 1})[:-1], "msgpack"),
        (pack({"a": 1}) + b"\x00", "msgpack"),
        (msgpack.packb({"s": "x" * (Limits().max_text + 1)}), "msgpack"),
    ],
)
def test_malformed_messages_raise_wire_errors(data, says):
    with pytest.raises(WireError, match=says):
        unpack(data, Limits())


def test_message_size_is_bounded_before_decoding():
    with pytest.raises(WireError, match="at most 100"):
        unpack(b"\0" * 101, Limits(max_message_bytes=100))


def test_objects_cannot_be_sent():
    with pytest.raises(TypeError):
        pack({"a": np.array([object()], dtype=object)})


# --- no pickle on the wire path -------------------------------------------------------------

WIRE_PACKAGES = [Path(aloe.__file__).parent / "serve", Path(aloe.__file__).parent / "robot"]
PICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
    ]


def test_wire_modules_never_unpickle():
    """Static: no module of aloe.serve or aloe.robot imports a pickler, calls torch.load or
    np.load without allow_pickle=False, and every msgpack decode sets raw=False and an
    ext_hook. It fails as soon as someone adds `import pickle`, a `torch.load(...)` or an
    `unpackb(...)` that keeps msgpack's default ExtType passthrough."""
    files = [f for pkg in WIRE_PACKAGES for f in pkg.glob("*.py")]
    assert len(files) >= 8
    unpacks = 0
    for file in files:
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & PICKLERS, file
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in PICKLERS, file
        assert not [c for c in _calls(tree, "load") if getattr(c.func.value, "id", "") == "torch"]
        for call in _calls(tree, "load"):
            if getattr(call.func.value, "id", "") == "np":
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("allow_pickle"), ast.Constant), file
                assert kw["allow_pickle"].value is False, file
        for call in _calls(tree, "unpackb") + _calls(tree, "Unpacker"):
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("raw"), ast.Constant) and kw["raw"].value is False, file
            assert "ext_hook" in kw, file
            unpacks += 1
    assert unpacks == 1  # one decoder: aloe.serve.wire.unpack


def test_a_pickle_payload_is_refused_and_never_unpickled(monkeypatch):
    """Dynamic: with every pickle entry point booby-trapped, payloads that would unpickle
    under a careless codec (an object-dtype array holding a pickle, a msgpack ExtType
    holding one) are refused with WireError, and an ordinary message still decodes."""

    def trap(*args, **kwargs):
        raise AssertionError("the wire path called pickle")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap)
    payload = pickle.dumps({"evil": 1})
    as_object = msgpack.packb(
        {"a": {b"__ndarray__": True, b"data": payload, b"dtype": "|O", b"shape": [1]}}
    )
    for data in (as_object, msgpack.packb({"a": msgpack.ExtType(42, payload)})):
        with pytest.raises(WireError):
            unpack(data)
    assert unpack(pack({"x": np.ones(3, np.float32)}))["x"].sum() == 3
