"""Generators of hostile model files, one per way a file could abuse a
format's own features (fastlstm issue 17's classes). Each generator writes
its file(s) into a folder and returns a ``Case``: what to load, with which
options, whether to run a prediction after loading, and the message the
refusal must contain. ``tests/test_hostile_files.py`` loads each one in a
child process (``tests/hostile_child.py``) and checks the outcome.

Every file here is made by code, so a reviewer can read what it does; no
opaque blobs are committed.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from _helpers import write_keras2_h5
from torch_files import Emitter, Storages

# Bytes of "another file" the hostile files try to reach; they may appear in
# no result and no message.
SECRET = b"fastlstm-secret-" * 64


@dataclass
class Case:
    path: Path
    match: str | None  # regex of the FastLSTMError; None: loading it is fine
    kwargs: dict = field(default_factory=dict)
    predict: tuple | None = None  # input shape of a predict() after loading


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name: str):
    def register(fn: Callable[[Path], Case]) -> Callable[[Path], Case]:
        CASES[name] = fn
        return fn

    return register


def write_secret(folder: Path) -> Path:
    path = folder / "secret.bin"
    path.write_bytes(SECRET)
    return path


# --- PyTorch pickles --------------------------------------------------------


def opcodes(*parts) -> bytes:
    """Pickle opcodes for objects and Raw pieces, without PROTO or STOP."""
    e = Emitter()
    for part in parts:
        e.emit(part)
    return e.out.getvalue()[2:]


def tensor_opcodes(st: Storages, arr: np.ndarray) -> bytes:
    e = Emitter()
    e.tensor(st.add(arr))
    return e.out.getvalue()[2:]


def torch_zip(folder: Path, body: bytes, st: Storages | None = None) -> Path:
    """A torch zip file whose data.pkl is ``body`` (opcodes) + STOP."""
    path = folder / "hostile.pt"
    st = st or Storages()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        zf.writestr("archive/byteorder", "little")
        for key, raw in st.data.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def _weights_dict(entries: bytes) -> bytes:
    """An OrderedDict literal holding ``entries`` (key/value opcodes)."""
    return (
        b"ccollections\nOrderedDict\n)R(" + entries + b"u"  # REDUCE, SETITEMS
    )


@case("pickle_build_rewrites_tensor_stride")
def _build_on_tensor(folder: Path) -> Case:
    """BUILD on a validated tensor, setting a huge negative stride: with
    CPython's unpickler this read heap memory before the storage."""
    st = Storages()
    t = tensor_opcodes(st, np.ones((4, 4), np.float32))
    state = opcodes((None, {"stride": (-(1 << 40), 1), "offset": 0}))
    body = _weights_dict(opcodes("weight_ih_l0") + t + state + b"b")
    return Case(torch_zip(folder, body, st), r"BUILD applied to a LazyTensor")


@case("pickle_build_on_module_function")
def _build_on_function(folder: Path) -> Case:
    body = b"ctorch._utils\n_rebuild_tensor_v2\n" + opcodes({"x": 1}) + b"b"
    return Case(torch_zip(folder, body), r"BUILD applied to a Call")


@case("pickle_build_renames_storage_type")
def _build_on_storage_type(folder: Path) -> Case:
    """BUILD on the shared HalfStorage object: it would read float16 files
    as bfloat16 for the rest of the process."""
    body = (
        b"ctorch\nHalfStorage\n" + opcodes((None, {"name": "BFloat16Storage"})) + b"b"
    )
    return Case(torch_zip(folder, body), r"BUILD applied to a StorageType")


@case("pickle_setitem_on_global")
def _setitem_on_global(folder: Path) -> Case:
    body = b"ccollections\nOrderedDict\n" + opcodes("k", 1) + b"s"
    return Case(torch_zip(folder, body), r"SETITEM applied to a Call")


@case("pickle_list_copies")
def _list_copies(folder: Path) -> Case:
    """list(L) of one memo'd list, again and again: each copy costs a few
    bytes of file and allocates the whole list."""
    body = b"c__builtin__\nlist\nq\x01" + b"(" + b"K\x07" * 4000 + b"lq\x02"
    body += b"h\x01h\x02\x85R0" * 20000
    return Case(torch_zip(folder, body + b"N"), r"more work than its size allows")


@case("pickle_deep_tuples_as_key")
def _deep_tuples(folder: Path) -> Case:
    """Tuples nested 100,000 deep, used as a dict key: hashing them would
    recurse in C until the stack overflows."""
    body = b"}" + b"N" + b"\x85" * 100_000 + b"K\x01s"
    return Case(torch_zip(folder, body), r"tuples nest more than")


@case("pickle_shared_dicts_fan_out")
def _shared_dicts(folder: Path) -> Case:
    """Each level a dict holding the level below 64 times: a walk that
    does not notice sharing visits 64^8 dicts."""
    body = b"}q\x00"
    for level in range(1, 9):
        items = b"".join(
            opcodes(f"k{i}") + b"h" + bytes([level - 1]) for i in range(64)
        )
        body += b"}(" + items + b"uq" + bytes([level])
    return Case(torch_zip(folder, body), r"no nn.LSTM")


@case("pickle_zero_stride_expansion")
def _zero_stride(folder: Path) -> Case:
    """A one-element storage viewed as a 2^15 x 2^14 tensor (stride 0):
    2 GiB of copies from 4 bytes."""
    st = Storages()
    key = st.add_raw(np.ones(1, np.float32))
    e = Emitter()
    from torch_files import Tensor

    e.tensor(Tensor(key, "FloatStorage", 1, 0, (1 << 15, 1 << 14), (0, 0)))
    body = _weights_dict(opcodes("weight_ih_l0") + e.out.getvalue()[2:])
    return Case(torch_zip(folder, body, st), r"holds too little data")


@case("pickle_overlong_frame")
def _overlong_frame(folder: Path) -> Case:
    body = b"\x95" + struct.pack("<Q", 1 << 40) + b"N"
    return Case(torch_zip(folder, body), r"frame of \d+ bytes runs past")


@case("pickle_busywork_at_size_limit")
def _busywork(folder: Path) -> Case:
    """A data.pkl just under the size limit of pushes and pops: the
    interpreter's time is linear in it and bounded."""
    body = b"N0" * ((4 << 20) // 2 - 16) + b"\xff"
    return Case(torch_zip(folder, body), r"opcode 0xff is not allowed")


# --- HDF5 (Keras .h5 and the weights inside .keras archives) ----------------

LSTM_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "s",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"name": "inp", "batch_input_shape": [None, 4, 2]},
            },
            {"class_name": "LSTM", "config": {"name": "lstm", "units": 3}},
        ],
    },
}
LSTM_ARRAYS = {
    "kernel:0": np.full((2, 12), 0.1, np.float32),
    "recurrent_kernel:0": np.full((3, 12), 0.1, np.float32),
    "bias:0": np.zeros(12, np.float32),
}


def keras_h5(
    folder: Path,
    kernel: Callable[[h5py.Group, str, np.ndarray], None] | None = None,
    model_config: str | None = None,
) -> Path:
    """A Keras 2 .h5 of Sequential([Input((4, 2)), LSTM(3)]); ``kernel``
    writes the kernel dataset its own (hostile) way."""

    def write(group: h5py.Group, name: str, arr: np.ndarray) -> None:
        if name == "kernel:0" and kernel is not None:
            kernel(group, name, arr)
        else:
            group.create_dataset(name, data=arr)

    return write_keras2_h5(
        folder / "hostile.h5",
        model_config or LSTM_CONFIG,
        {"lstm": LSTM_ARRAYS},
        write=write,
    )


@case("h5_external_raw_data")
def _h5_external(folder: Path) -> Case:
    """The kernel's raw data kept in another file (HDF5 external storage)."""
    secret = write_secret(folder)

    def kernel(g, name, arr):
        g.create_dataset(name, arr.shape, "<f4", external=[(str(secret), 0, 96)])

    return Case(keras_h5(folder, kernel), r"outside the file \(external")


def _vds_kernel(source: Path, make_source: bool):
    def kernel(g, name, arr):
        if make_source:
            with h5py.File(source, "w") as s:
                s.create_dataset("x", data=np.frombuffer(SECRET[:96], "<f4"))
        layout = h5py.VirtualLayout(shape=(24,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(source), "x", shape=(24,))
        g.create_virtual_dataset(name, layout)

    return kernel


@case("h5_virtual_dataset")
def _h5_vds(folder: Path) -> Case:
    """The kernel a virtual dataset whose source is another HDF5 file."""
    path = keras_h5(folder, _vds_kernel(folder / "source.h5", True))
    return Case(path, r"outside the file \(a virtual dataset")


@case("h5_virtual_dataset_from_fifo")
def _h5_vds_fifo(folder: Path) -> Case:
    """A virtual dataset sourced from a FIFO: reading it would block."""
    fifo = folder / "fifo.h5"
    os.mkfifo(fifo)
    path = keras_h5(folder, _vds_kernel(fifo, False))
    return Case(path, r"outside the file \(a virtual dataset")


@case("h5_unknown_filter")
def _h5_filter(folder: Path) -> Case:
    """A chunk that needs a filter plugin (bzip2, id 307) to decode."""

    def kernel(g, name, arr):
        ds = g.create_dataset(
            name,
            arr.shape,
            "<f4",
            chunks=arr.shape,
            compression=307,
            allow_unknown_filter=True,
        )
        ds.id.write_direct_chunk((0, 0), arr.tobytes())

    return Case(keras_h5(folder, kernel), r"filter\(s\) \[307\]")


@case("h5_giant_chunk")
def _h5_giant_chunk(folder: Path) -> Case:
    """A 2 x 12 kernel kept in one gzip chunk of 256 MiB (256 KB on disk):
    reading it would inflate the whole chunk."""

    def kernel(g, name, arr):
        chunk = (1 << 13, 1 << 13)
        ds = g.create_dataset(
            name,
            arr.shape,
            "<f4",
            chunks=chunk,
            maxshape=(None, None),
            compression="gzip",
        )
        z = zlib.compressobj(1)
        zero = bytes(1 << 24)
        parts = [z.compress(zero) for _ in range((chunk[0] * chunk[1] * 4) >> 24)]
        ds.id.write_direct_chunk((0, 0), b"".join(parts) + z.flush())

    return Case(keras_h5(folder, kernel), r"chunks of \d+ bytes")


@case("h5_strings_claiming_bfloat16")
def _h5_vlen_bf16(folder: Path) -> Case:
    """Variable-length strings as the kernel, with dtype="bfloat16"."""

    def kernel(g, name, arr):
        ds = g.create_dataset(
            name,
            data=np.array(["x" * 1000] * 24, dtype=object),
            dtype=h5py.string_dtype(),
        )
        ds.attrs["dtype"] = "bfloat16"

    return Case(keras_h5(folder, kernel), r"claims bfloat16 but stores")


# --- text from a file used as a path ------------------------------------------


@case("h5_model_config_names_dev_zero")
def _config_dev_zero(folder: Path) -> Case:
    return Case(
        keras_h5(folder, model_config="/dev/zero"),
        r"model_config attribute is not valid JSON",
    )


@case("h5_model_config_names_fifo")
def _config_fifo(folder: Path) -> Case:
    fifo = folder / "config.fifo"
    os.mkfifo(fifo)
    return Case(
        keras_h5(folder, model_config=str(fifo)),
        r"model_config attribute is not valid JSON",
    )


@case("h5_model_config_names_other_json")
def _config_other_json(folder: Path) -> Case:
    import json

    other = folder / "other.json"
    other.write_text(json.dumps(LSTM_CONFIG))
    return Case(
        keras_h5(folder, model_config=str(other)),
        r"model_config attribute is not valid JSON",
    )


@case("keras_archive_config_names_other_json")
def _archive_config_path(folder: Path) -> Case:
    import json

    other = folder / "other.json"
    other.write_text(json.dumps(LSTM_CONFIG))
    path = folder / "hostile.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", str(other))
        zf.writestr("metadata.json", '{"keras_version": "3.5.0"}')
        zf.writestr("model.weights.h5", b"")
    return Case(path, r"config\.json")


# --- TF1 checkpoints -----------------------------------------------------------


def tf1_bundle(prefix: Path) -> Path:
    from tf_bundle import write_bundle

    rng = np.random.default_rng(0)
    write_bundle(
        prefix,
        {
            "rnn/lstm_cell/kernel": rng.normal(0, 0.1, (5, 12)).astype(np.float32),
            "rnn/lstm_cell/bias": np.zeros(12, np.float32),
        },
    )
    return prefix


def _tf1_state_pointing_to(folder: Path, target: str) -> Path:
    model = folder / "model"
    model.mkdir()
    (model / "checkpoint").write_text(f'model_checkpoint_path: "{target}"\n')
    return model


@case("tf1_checkpoint_state_points_up")
def _tf1_relative_escape(folder: Path) -> Case:
    """model_checkpoint_path "../elsewhere/x": another folder's checkpoint."""
    (folder / "elsewhere").mkdir()
    tf1_bundle(folder / "elsewhere" / "x")
    model = _tf1_state_pointing_to(folder, "../elsewhere/x")
    return Case(model, r"lies outside")


@case("tf1_checkpoint_state_absolute_elsewhere")
def _tf1_absolute_escape(folder: Path) -> Case:
    (folder / "elsewhere").mkdir()
    target = tf1_bundle(folder / "elsewhere" / "y")
    model = _tf1_state_pointing_to(folder, str(target))
    return Case(model, r"lies outside")


@case("tf1_data_shard_is_a_link")
def _tf1_shard_link(folder: Path) -> Case:
    """The data shard a symbolic link to another file of the same size."""
    prefix = tf1_bundle(folder / "model.ckpt")
    shard = folder / "model.ckpt.data-00000-of-00001"
    secret = folder / "secret.bin"
    secret.write_bytes(SECRET[: shard.stat().st_size].ljust(shard.stat().st_size))
    shard.unlink()
    shard.symlink_to(secret)
    return Case(prefix, r"is a symbolic link")


@case("tf1_data_shard_is_a_fifo")
def _tf1_shard_fifo(folder: Path) -> Case:
    prefix = tf1_bundle(folder / "model.ckpt")
    shard = folder / "model.ckpt.data-00000-of-00001"
    shard.unlink()
    os.mkfifo(shard)
    return Case(prefix, r"not a regular file \(a FIFO\)")


@case("model_path_is_dev_zero")
def _dev_zero(folder: Path) -> Case:
    return Case(Path("/dev/zero"), r"not a regular file \(a character device\)")


@case("model_path_is_a_fifo")
def _model_fifo(folder: Path) -> Case:
    fifo = folder / "model.h5"
    os.mkfifo(fifo)
    return Case(fifo, r"not a regular file \(a FIFO\)")


# --- .npz archives ---------------------------------------------------------------


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    from numpy.lib import format as npy_format

    d = {"descr": descr, "fortran_order": False, "shape": shape}
    import io

    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, d)
    return out.getvalue()


@case("npz_header_declares_gigabytes")
def _npz_shape(folder: Path) -> Case:
    """A 100-byte member whose .npy header declares 2^28 floats: NumPy
    would allocate 1 GiB before finding the data missing."""
    path = folder / "vars.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rnn/lstm_cell/kernel.npy", _npy_header((1 << 28,)) + bytes(100))
    return Case(path, r"declares shape \(268435456,\)")


@case("npz_inflation_bomb")
def _npz_bomb(folder: Path) -> Case:
    """64 MiB of zeros deflated to about 64 KB."""
    path = folder / "vars.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(
            "rnn/lstm_cell/kernel.npy", _npy_header((1 << 24,)) + bytes(1 << 26)
        )
    return Case(path, r"would inflate \d+ bytes to \d+; refused")


@case("npz_object_array")
def _npz_objects(folder: Path) -> Case:
    path = folder / "vars.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rnn/lstm_cell/kernel.npy", _npy_header((2,), "|O") + b"\x80\x02N.")
    return Case(path, r"holds Python objects")


# --- ONNX external data -----------------------------------------------------------

ONNX_FIXTURE = Path(__file__).parent / "fixtures" / "onnx" / "torch_export_lstm"


def onnx_with_external(folder: Path, location: str, **fields) -> Path:
    """The fixture LSTM with its weight W kept in ``location`` (external
    data); ``fields`` override the offset/length written for it."""
    import onnx

    model = onnx.load(ONNX_FIXTURE / "model.onnx")
    for t in model.graph.initializer:
        if len(t.dims) == 3:  # the LSTM's W, R
            raw = t.raw_data or onnx.numpy_helper.to_array(t).tobytes()
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            info = {"location": location, "offset": "0", "length": str(len(raw))}
            info.update({k: str(v) for k, v in fields.items()})
            for key, value in info.items():
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            break
    path = folder / "model.onnx"
    onnx.save(model, path)
    return path


@case("onnx_external_data_up_a_folder")
def _onnx_up(folder: Path) -> Case:
    write_secret(folder)
    (folder / "m").mkdir()
    return Case(onnx_with_external(folder / "m", "../secret.bin"), r"not a file name")


@case("onnx_external_data_absolute_path")
def _onnx_abs(folder: Path) -> Case:
    secret = write_secret(folder)
    return Case(onnx_with_external(folder, str(secret)), r"not a file name")


@case("onnx_external_data_is_a_link")
def _onnx_link(folder: Path) -> Case:
    secret = write_secret(folder)
    (folder / "w.bin").symlink_to(secret)
    return Case(onnx_with_external(folder, "w.bin"), r"is a symbolic link")


@case("onnx_external_data_is_a_fifo")
def _onnx_fifo(folder: Path) -> Case:
    os.mkfifo(folder / "w.bin")
    return Case(onnx_with_external(folder, "w.bin"), r"not a regular file \(a FIFO\)")


@case("onnx_external_data_past_the_end")
def _onnx_past_end(folder: Path) -> Case:
    (folder / "w.bin").write_bytes(bytes(64))
    return Case(onnx_with_external(folder, "w.bin"), r"beyond the end")


@case("onnx_external_data_wrong_length")
def _onnx_length(folder: Path) -> Case:
    (folder / "w.bin").write_bytes(bytes(1 << 16))
    path = onnx_with_external(folder, "w.bin", length=1 << 40)
    return Case(path, r"dims and type need")


# --- Keras configs: structure, depth, size, types -----------------------------


def keras_archive(folder: Path, config: str | bytes, name: str = "hostile") -> Path:
    """A .keras archive with the given config.json and an empty weights file."""
    import io

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers")
    path = folder / f"{name}.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", config)
        zf.writestr("metadata.json", '{"keras_version": "3.5.0"}')
        zf.writestr("model.weights.h5", buf.getvalue())
    return path


def _functional(layers: list, inputs: list, outputs) -> str:
    import json

    return json.dumps(
        {
            "class_name": "Functional",
            "config": {
                "name": "f",
                "layers": layers,
                "input_layers": inputs,
                "output_layers": outputs,
            },
        }
    )


def _input_layer(name: str = "inp") -> dict:
    return {
        "class_name": "InputLayer",
        "name": name,
        "config": {"name": name, "batch_shape": [None, 4, 2]},
        "inbound_nodes": [],
    }


def _call(layer: str) -> dict:
    return {
        "args": [
            {
                "class_name": "__keras_tensor__",
                "config": {
                    "shape": [None, 4, 2],
                    "dtype": "float32",
                    "keras_history": [layer, 0, 0],
                },
            }
        ],
        "kwargs": {},
    }


@case("keras_config_nested_100000_deep")
def _deep_json(folder: Path) -> Case:
    return Case(keras_archive(folder, "[" * 100_000 + "]" * 100_000), r"nests")


@case("keras_functional_chain_5000_layers")
def _chain(folder: Path) -> Case:
    """5,000 Activation layers, each fed by the one before: a recursive
    walk of the graph ran out of stack. Such a model is legitimate and
    loads and runs."""
    layers = [_input_layer()]
    prev = "inp"
    for k in range(5000):
        name = f"a{k}"
        layers.append(
            {
                "class_name": "Activation",
                "name": name,
                "config": {"name": name, "activation": "linear"},
                "inbound_nodes": [_call(prev)],
            }
        )
        prev = name
    config = _functional(layers, [["inp", 0, 0]], [[prev, 0, 0]])
    return Case(keras_archive(folder, config), None, predict=(1, 4, 2))


@case("keras_too_many_layers")
def _many_layers(folder: Path) -> Case:
    layers = [_input_layer()] + [
        {
            "class_name": "Dropout",
            "name": f"d{k}",
            "config": {"name": f"d{k}"},
            "inbound_nodes": [_call("inp")],
        }
        for k in range(60_000)
    ]
    config = _functional(layers, [["inp", 0, 0]], [["d0", 0, 0]])
    return Case(keras_archive(folder, config), r"\d+ layers")


@case("keras_nested_output_layers")
def _nested_outputs(folder: Path) -> Case:
    outputs = "[" * 5000 + '"inp", 0, 0' + "]" * 5000
    text = _functional([_input_layer()], [["inp", 0, 0]], "@")
    return Case(keras_archive(folder, text.replace('"@"', outputs)), r"nests")


@case("keras_activation_config_is_a_string")
def _activation_string_config(folder: Path) -> Case:
    layers = [
        _input_layer(),
        {
            "class_name": "Activation",
            "name": "a",
            "config": {
                "name": "a",
                "activation": {"class_name": 7, "config": "oops"},
            },
            "inbound_nodes": [_call("inp")],
        },
    ]
    config = _functional(layers, [["inp", 0, 0]], [["a", 0, 0]])
    return Case(keras_archive(folder, config), r"not a name", predict=(1, 4, 2))


@case("keras_repeat_vector_of_a_billion")
def _repeat_vector(folder: Path) -> Case:
    """RepeatVector(n) with n from the file: the first predict would
    allocate n copies of its input."""
    layers = [
        {
            "class_name": "InputLayer",
            "name": "inp",
            "config": {"name": "inp", "batch_shape": [None, 2]},
            "inbound_nodes": [],
        },
        {
            "class_name": "RepeatVector",
            "name": "r",
            "config": {"name": "r", "n": 1_000_000_000},
            "inbound_nodes": [_call("inp")],
        },
    ]
    config = _functional(layers, [["inp", 0, 0]], [["r", 0, 0]])
    return Case(
        keras_archive(folder, config),
        r"RepeatVector\): n=1000000000 is not a count",
        predict=(1, 2),
    )


def onnx_graph_file(folder: Path, nodes: list, inits: list, output: str) -> Path:
    """A small ONNX model of glue nodes, its output ``output``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    path = folder / "model.onnx"
    onnx.save(model, path)
    return path


@case("onnx_constant_of_shape_16_gib")
def _onnx_cos(folder: Path) -> Case:
    """A 100-byte graph folding ConstantOfShape([2^32]) at load."""
    from onnx import helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1 << 32], np.int64), "shape")
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"])
    return Case(onnx_graph_file(folder, [node], [shape], "y"), r"ConstantOfShape")


@case("onnx_concat_one_initializer_1000_times")
def _onnx_concat(folder: Path) -> Case:
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.zeros(1 << 18, np.float32), "w")
    node = helper.make_node("Concat", ["w"] * 1000, ["y"], axis=0)
    return Case(onnx_graph_file(folder, [node], [w], "y"), r"Concat")


@case("onnx_gather_repeats_an_initializer")
def _onnx_gather(folder: Path) -> Case:
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((1, 1 << 16), np.float32), "w")
    idx = numpy_helper.from_array(np.zeros(1 << 16, np.int64), "i")
    node = helper.make_node("Gather", ["w", "i"], ["y"], axis=0)
    return Case(onnx_graph_file(folder, [node], [w, idx], "y"), r"Gather")


def tf1_index_of_block(prefix: Path, data_block: bytes, last_key: bytes) -> Path:
    """A checkpoint .index whose one data block is ``data_block`` (and an
    empty data shard)."""
    from tf_bundle import index_file

    Path(f"{prefix}.index").write_bytes(index_file([(data_block, last_key)]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    return prefix


@case("tf1_index_keys_grow_quadratically")
def _tf1_quadratic_keys(folder: Path) -> Case:
    """200,000 entries of 5 bytes, each key one byte longer than the last
    (shared = all of it): 2 * 10^10 bytes of keys from a 1 MB index."""
    from tf_bundle import varint

    n = 200_000
    entries = bytearray(b"\x00\x01\x00a")
    for k in range(1, n):
        entries += varint(k) + b"\x01\x00a"
    raw = bytes(entries) + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    prefix = tf1_index_of_block(folder / "model.ckpt", raw, b"a" * 8)
    return Case(prefix, r"keys expand beyond")


KERAS_FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "k3_masking_lstm_keras"


@case("keras_archive_weights_in_another_file")
def _archive_external(folder: Path) -> Case:
    """A real .keras archive whose LSTM kernel is rewritten as HDF5 external
    storage naming another file: from inside an archive, relative names
    resolve against the working directory."""
    import io

    secret = write_secret(folder)
    src = zipfile.ZipFile(KERAS_FIXTURE / "model.keras")
    buf = io.BytesIO(src.read("model.weights.h5"))
    with h5py.File(buf, "a") as f:
        g = f["layers/lstm/cell/vars"]
        shape, dtype = g["0"].shape, g["0"].dtype
        del g["0"]
        nbytes = int(np.prod(shape)) * dtype.itemsize
        g.create_dataset("0", shape, dtype, external=[(str(secret), 0, nbytes)])
    path = folder / "hostile.keras"
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = buf.getvalue() if info.filename == "model.weights.h5" else None
            dst.writestr(info.filename, data or src.read(info))
    return Case(path, r"outside the file \(external")


@case("tf1_checkpoint_state_not_utf8")
def _tf1_state_bytes(folder: Path) -> Case:
    """Bytes that are not UTF-8 in the state file (once a
    UnicodeDecodeError): read as replacement characters, a name in the
    folder that is not there."""
    model = folder / "model"
    model.mkdir()
    (model / "checkpoint").write_bytes(b'model_checkpoint_path: "\xff\xfe\x80"\n')
    return Case(model, r"cannot read the file")


@case("safetensors_header_nested_deep")
def _safetensors_deep(folder: Path) -> Case:
    header = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = folder / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return Case(path, r"nests more than 100 levels")
