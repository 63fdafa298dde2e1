"""One adapter per engine, all built from the same canonical weights
(kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H), gate order i, f, g, o);
for a GRU (``w["cell"] == "gru"``) kernel (I, 3H), recurrent_kernel (H, 3H),
bias and recurrent_bias (3H), gate order z, r, n, reset_after.

Each adapter offers, where the engine can do it:
  step(weights, batch)  -> (fn, final): fn(x_t) runs one streaming step;
                           final() returns the current h (for accuracy)
  seq(weights)          -> fn(x) running a whole (batch, time, features)
                           sequence, returning all outputs (batch, time, H)
Thread counts are pinned by the caller (fastlstm.bench.runner) before
anything is built.
"""

from __future__ import annotations

import numpy as np

import fastlstm


def _split(w):
    return w["kernel"], w["recurrent_kernel"], w["bias"]


def is_gru(w) -> bool:
    return w.get("cell") == "gru"


def _gru4(w):
    return w["kernel"], w["recurrent_kernel"], w["bias"], w["recurrent_bias"]


def _torch_gru_rows(m):
    """Canonical (rows, 3H) columns z, r, n -> torch's (3H, rows) rows r, z, n."""
    z, r, n = np.split(m, 3, axis=-1)
    return np.concatenate([r, z, n], axis=-1).T


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def numpy_gru_step(x, h, w):
    W, U, b, rb = _gru4(w)
    H = U.shape[0]
    gx, gh = x @ W + b, h @ U + rb
    z = _sigmoid(gx[:, :H] + gh[:, :H])
    r = _sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
    n = np.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
    return n + z * (h - n)


class FastLSTM:
    name = "fastlstm"

    def __init__(self, threads: int = 1) -> None:
        self.fastlstm = fastlstm
        self.threads = threads

    def version(self) -> str:
        return self.fastlstm.__version__

    def _layer(self, w, **kw):
        if is_gru(w):
            return self.fastlstm.GRU(*_gru4(w), threads=self.threads, **kw)
        return self.fastlstm.LSTM(*_split(w), threads=self.threads, **kw)

    def step(self, w, batch):
        layer = self._layer(w)
        stream = layer.stream(batch)
        out = np.empty((batch, layer.output_size), np.float32)
        step = stream.step

        def fn(x):
            return step(x, out=out)

        if is_gru(w):
            return fn, lambda: stream.state
        return fn, lambda: stream.state[0]

    def seq(self, w):
        return self._layer(w, return_sequences=True)


class NumPy:
    """The textbook implementation: two matrix products and the gates."""

    name = "numpy"

    def version(self) -> str:
        return np.__version__

    def step(self, w, batch):
        if is_gru(w):
            return self._gru_step(w, batch)
        W, U, b = _split(w)
        H = U.shape[0]
        state = {
            "h": np.zeros((batch, H), np.float32),
            "c": np.zeros((batch, H), np.float32),
        }

        def fn(x):
            z = x @ W + state["h"] @ U + b
            i = 1 / (1 + np.exp(-z[:, :H]))
            f = 1 / (1 + np.exp(-z[:, H : 2 * H]))
            g = np.tanh(z[:, 2 * H : 3 * H])
            o = 1 / (1 + np.exp(-z[:, 3 * H :]))
            state["c"] = f * state["c"] + i * g
            state["h"] = o * np.tanh(state["c"])
            return state["h"]

        return fn, lambda: state["h"]

    def _gru_step(self, w, batch):
        state = {"h": np.zeros((batch, w["recurrent_kernel"].shape[0]), np.float32)}

        def fn(x):
            state["h"] = numpy_gru_step(x, state["h"], w)
            return state["h"]

        return fn, lambda: state["h"]

    def _gru_seq(self, w):
        W, U, b, rb = _gru4(w)
        H = U.shape[0]

        def fn(x):
            B, T, _ = x.shape
            xw = (x.reshape(B * T, -1) @ W).reshape(B, T, -1) + b
            h = np.zeros((B, H), np.float32)
            out = np.empty((B, T, H), np.float32)
            for t in range(T):
                gh = h @ U + rb
                z = _sigmoid(xw[:, t, :H] + gh[:, :H])
                r = _sigmoid(xw[:, t, H : 2 * H] + gh[:, H : 2 * H])
                n = np.tanh(xw[:, t, 2 * H :] + r * gh[:, 2 * H :])
                h = n + z * (h - n)
                out[:, t] = h
            return out

        return fn

    def seq(self, w):
        if is_gru(w):
            return self._gru_seq(w)
        W, U, b = _split(w)

        def fn(x):
            B, T, _ = x.shape
            H = U.shape[0]
            xw = (x.reshape(B * T, -1) @ W).reshape(B, T, -1) + b
            h = np.zeros((B, H), np.float32)
            c = np.zeros((B, H), np.float32)
            out = np.empty((B, T, H), np.float32)
            for t in range(T):
                z = xw[:, t] + h @ U
                i = 1 / (1 + np.exp(-z[:, :H]))
                f = 1 / (1 + np.exp(-z[:, H : 2 * H]))
                g = np.tanh(z[:, 2 * H : 3 * H])
                o = 1 / (1 + np.exp(-z[:, 3 * H :]))
                c = f * c + i * g
                h = o * np.tanh(c)
                out[:, t] = h
            return out

        return fn


class Torch:
    name = "pytorch"

    def __init__(self, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    def version(self) -> str:
        return self.torch.__version__

    def _load(self, module, w, suffix=""):
        torch = self.torch
        if is_gru(w):
            W, U, b, rb = _gru4(w)
            with torch.no_grad():
                for name, v in (
                    ("weight_ih", _torch_gru_rows(W)),
                    ("weight_hh", _torch_gru_rows(U)),
                    ("bias_ih", _torch_gru_rows(b[None])[:, 0]),
                    ("bias_hh", _torch_gru_rows(rb[None])[:, 0]),
                ):
                    getattr(module, name + suffix).copy_(torch.from_numpy(v.copy()))
            return module.eval()
        W, U, b = _split(w)
        with torch.no_grad():
            getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(W.T.copy()))
            getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(U.T.copy()))
            getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(b))
            getattr(module, "bias_hh" + suffix).zero_()
        return module.eval()

    def step(self, w, batch):
        torch = self.torch
        I, H = w["kernel"].shape[0], w["recurrent_kernel"].shape[0]
        if is_gru(w):
            gcell = self._load(torch.nn.GRUCell(I, H), w)
            hs = [torch.zeros(batch, H)]

            def gfn(x):
                with torch.inference_mode():
                    hs[0] = gcell(torch.from_numpy(x), hs[0])
                return hs[0]

            return gfn, lambda: hs[0].numpy()
        cell = self._load(torch.nn.LSTMCell(I, H), w)
        state = [torch.zeros(batch, H), torch.zeros(batch, H)]

        def fn(x):
            with torch.inference_mode():
                state[0], state[1] = cell(torch.from_numpy(x), (state[0], state[1]))
            return state[0]

        return fn, lambda: state[0].numpy()

    def seq(self, w):
        torch = self.torch
        I, H = w["kernel"].shape[0], w["recurrent_kernel"].shape[0]
        module = torch.nn.GRU if is_gru(w) else torch.nn.LSTM
        lstm = self._load(module(I, H, batch_first=True), w, "_l0")

        def fn(x):
            with torch.inference_mode():
                return lstm(torch.from_numpy(x))[0].numpy()

        return fn


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        self.ort = ort
        self.threads = threads

    def version(self) -> str:
        return self.ort.__version__

    def _gru_node(self, w, with_state: bool):
        """A GRU node (linear_before_reset=1: reset_after) with its
        initializers; ONNX's GRU blocks z, r, h are the canonical order."""
        from onnx import TensorProto, helper

        W, U, b, rb = _gru4(w)
        I, H = W.shape[0], U.shape[0]
        inits = [
            helper.make_tensor("W", TensorProto.FLOAT, (1, 3 * H, I), W.T.ravel()),
            helper.make_tensor("R", TensorProto.FLOAT, (1, 3 * H, H), U.T.ravel()),
            helper.make_tensor(
                "B", TensorProto.FLOAT, (1, 6 * H), np.concatenate([b, rb])
            ),
        ]
        node_in = ["X", "W", "R", "B"] + (["", "h0"] if with_state else [])
        node = helper.make_node(
            "GRU", node_in, ["Y", "Y_h"], hidden_size=H, linear_before_reset=1
        )
        return node, inits, ("h0",), ("Y", "Y_h")

    def _session(self, w, with_state: bool):
        from onnx import TensorProto, helper

        if is_gru(w):
            node, inits, states, outs = self._gru_node(w, with_state)
            return self._make(node, inits, w, with_state, states, outs)
        W, U, b = _split(w)
        I, H = W.shape[0], U.shape[0]
        order = [0, 3, 1, 2]  # ONNX gate blocks i, o, f, c from canonical i, f, g, o

        def onnx_blocks(m):  # (rows, 4H) canonical -> (4H, rows) ONNX
            return np.concatenate([m[..., k * H : (k + 1) * H] for k in order], -1).T

        inits = [
            helper.make_tensor(
                "W", TensorProto.FLOAT, (1, 4 * H, I), onnx_blocks(W).ravel()
            ),
            helper.make_tensor(
                "R", TensorProto.FLOAT, (1, 4 * H, H), onnx_blocks(U).ravel()
            ),
            helper.make_tensor(
                "B",
                TensorProto.FLOAT,
                (1, 8 * H),
                np.concatenate(
                    [onnx_blocks(b[None])[:, 0], np.zeros(4 * H, np.float32)]
                ),
            ),
        ]
        node_in = ["X", "W", "R", "B"] + (["", "h0", "c0"] if with_state else [])
        node = helper.make_node("LSTM", node_in, ["Y", "Y_h", "Y_c"], hidden_size=H)
        return self._make(node, inits, w, with_state, ("h0", "c0"), ("Y", "Y_h", "Y_c"))

    def _make(self, node, inits, w, with_state, states, outs):
        """A one-node model's session, one or self.threads threads."""
        from onnx import TensorProto, helper

        I, H = w["kernel"].shape[0], w["recurrent_kernel"].shape[0]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])]
        if with_state:
            inputs += [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "N", H])
                for n in states
            ]
        outputs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs
        ]
        graph = helper.make_graph([node], node.op_type.lower(), inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what opset 17 needs; newer onnx writes a newer one
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return self.ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    def step(self, w, batch):
        H = w["recurrent_kernel"].shape[0]
        sess = self._session(w, True)
        if is_gru(w):
            hs = {"h0": np.zeros((1, batch, H), np.float32)}

            def gfn(x):
                _, hs["h0"] = sess.run(None, {"X": x[None], **hs})
                return hs["h0"]

            return gfn, lambda: hs["h0"][0]
        state = {
            "h0": np.zeros((1, batch, H), np.float32),
            "c0": np.zeros((1, batch, H), np.float32),
        }

        def fn(x):
            _, h, c = sess.run(None, {"X": x[None], **state})
            state["h0"], state["c0"] = h, c
            return h

        return fn, lambda: state["h0"][0]

    def seq(self, w):
        sess = self._session(w, False)

        def fn(x):
            y = sess.run(["Y"], {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})[0]
            return y[:, 0].transpose(1, 0, 2)

        return fn


class Keras:
    """Keras 3 (TensorFlow backend): LSTM layer inside a model, predict()."""

    name = "keras"

    def __init__(self, threads: int = 1) -> None:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialized
        import keras

        self.keras = keras

    def version(self) -> str:
        return self.keras.__version__

    def seq(self, w):
        keras = self.keras
        W, U, b = _split(w)
        I, H = W.shape[0], U.shape[0]
        model = keras.Sequential(
            [keras.Input((None, I)), keras.layers.LSTM(H, return_sequences=True)]
        )
        model.layers[0].set_weights([W, U, b])

        def fn(x):
            return model.predict(x, verbose=0)

        return fn
