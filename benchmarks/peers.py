"""One adapter per engine, all built from the same canonical weights
(kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H), gate order i, f, g, o).

Each adapter offers, where the engine can do it:
  step(weights, batch)  -> (fn, final): fn(x_t) runs one streaming step;
                           final() returns the current h (for accuracy)
  seq(weights)          -> fn(x) running a whole (batch, time, features)
                           sequence, returning all outputs (batch, time, H)
Thread counts are pinned by the caller (run.py) before anything is built.
"""

from __future__ import annotations

import numpy as np


def _split(w):
    return w["kernel"], w["recurrent_kernel"], w["bias"]


class FastLSTM:
    name = "fastlstm"

    def __init__(self, threads: int = 1) -> None:
        import fastlstm

        self.fastlstm = fastlstm
        self.threads = threads

    def version(self) -> str:
        return self.fastlstm.__version__

    def step(self, w, batch):
        layer = self.fastlstm.LSTM(*_split(w), threads=self.threads)
        stream = layer.stream(batch)
        out = np.empty((batch, layer.output_size), np.float32)
        step = stream.step

        def fn(x):
            return step(x, out=out)

        return fn, lambda: stream.state[0]

    def seq(self, w):
        return self.fastlstm.LSTM(
            *_split(w), return_sequences=True, threads=self.threads
        )


class NumPy:
    """The textbook implementation: two matrix products and the gates."""

    name = "numpy"

    def version(self) -> str:
        return np.__version__

    def step(self, w, batch):
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

    def seq(self, w):
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
        lstm = self._load(torch.nn.LSTM(I, H, batch_first=True), w, "_l0")

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

    def _session(self, w, with_state: bool):
        from onnx import TensorProto, helper

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
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])]
        node_in = ["X", "W", "R", "B"]
        if with_state:
            inputs += [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "N", H])
                for n in ("h0", "c0")
            ]
            node_in += ["", "h0", "c0"]
        outputs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("Y", "Y_h", "Y_c")
        ]
        node = helper.make_node("LSTM", node_in, ["Y", "Y_h", "Y_c"], hidden_size=H)
        graph = helper.make_graph([node], "lstm", inputs, outputs, inits)
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
