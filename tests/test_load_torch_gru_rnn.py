"""PyTorch nn.GRU, nn.RNN and their cells, loaded from files torch wrote
(tests/fixtures/torch_gru_rnn, made by make_torch_gru_rnn_fixtures.py) and
from live modules: outputs and final states match torch to 1e-5."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm

FIXTURES = Path(__file__).parent / "fixtures" / "torch_gru_rnn"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))
MODULES = {
    "GRU": fastlstm.TorchGRU,
    "RNN": fastlstm.TorchRNN,
    "GRUCell": fastlstm.TorchGRUCell,
    "RNNCell": fastlstm.TorchRNNCell,
}


def case(name: str) -> tuple[dict, dict, Path]:
    folder = FIXTURES / name
    meta = json.loads((folder / "case.json").read_text())
    with np.load(folder / "ref.npz") as z:
        ref = {k: z[k] for k in z.files}
    return meta, ref, folder / meta["files"]["model"]


def load(meta: dict, path: Path):
    opts = meta["constructor"]
    kw = {}
    if not meta["module"].endswith("Cell"):
        kw["batch_first"] = opts.get("batch_first", False)
    if meta["module"].startswith("RNN"):
        kw["nonlinearity"] = opts.get("nonlinearity", "tanh")
    return fastlstm.load(path, **kw)


def test_every_case_is_here():
    assert len(CASES) >= 9, CASES


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_torch(name):
    meta, ref, path = case(name)
    model = load(meta, path)
    assert type(model) is MODULES[meta["module"]]
    x = ref["x"]
    if meta["module"].endswith("Cell"):
        h = ref["h0"][0] if "h0" in ref else None
        hs = []
        for t in range(x.shape[1]):
            h = model(x[:, t], h)
            hs.append(h)
        assert np.abs(np.stack(hs, 1) - ref["h_seq"]).max() <= TOL_F32
        return
    bf = model.batch_first
    lengths = ref["lengths"].astype(np.int64) if "lengths" in ref else None
    out, h_n = model(x if bf else x.transpose(1, 0, 2), ref.get("h0"), lengths=lengths)
    out = out if bf else out.transpose(1, 0, 2)
    assert np.abs(out - ref["output"]).max() <= TOL_F32
    assert np.abs(h_n - ref["h_n"]).max() <= TOL_F32
    c = meta["constructor"]
    assert (model.num_layers, model.bidirectional) == (
        c.get("num_layers", 1),
        c.get("bidirectional", False),
    )
    seq = x if bf else x.transpose(1, 0, 2)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again(seq)[0], model(seq)[0])


@pytest.mark.parametrize(
    "name",
    [n for n in CASES if not n.endswith(("bidir_batch_first", "bidir_safetensors"))],
)
def test_streams_match_the_whole_sequence(name):
    meta, ref, path = case(name)
    model = load(meta, path)
    x = ref["x"][:, :40]
    if meta["module"].endswith("Cell"):
        s = model.stream(x.shape[0])
        steps = np.stack([s.step(x[:, t]) for t in range(x.shape[1])], 1)
        h, hs = None, []
        for t in range(x.shape[1]):
            h = model(x[:, t], h)
            hs.append(h)
        np.testing.assert_array_equal(steps, np.stack(hs, 1))
        return
    bf = model.batch_first
    seq = x if bf else x.transpose(1, 0, 2)
    want, h_n = model(seq)
    s = model.stream(x.shape[0])
    first = np.stack([s.step(x[:, t]) for t in range(10)], 0 if not bf else 1)
    rest = s.feed(seq[:, 10:] if bf else seq[10:])
    got = np.concatenate([first, rest], 1 if bf else 0)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(s.state, h_n)
    s.state = np.zeros_like(h_n)
    assert not s.state.any()


def test_options_the_file_lacks_are_asked_for():
    meta, _, path = case("rnn_tanh_2layer")
    with pytest.raises(fastlstm.ConfigError, match="nonlinearity='tanh'"):
        fastlstm.load(path, batch_first=False)
    with pytest.raises(fastlstm.ConfigError, match="batch_first"):
        fastlstm.load(path, nonlinearity="tanh")
    with pytest.raises(fastlstm.ConfigError, match="nonlinearity must be one of"):
        fastlstm.load(path, batch_first=False, nonlinearity="gelu")
    _, _, gru = case("gru_basic")
    with pytest.raises(fastlstm.ConfigError, match="not nn.RNN"):
        fastlstm.TorchRNN.from_state_dict(_state_dict(gru), batch_first=False)


def _state_dict(path: Path) -> dict:
    from fastlstm.loaders.torch_pickle import load_torch_file

    return load_torch_file(path)


def test_repr_and_sizes():
    meta, _, path = case("rnn_relu_bidir_safetensors")
    model = load(meta, path)
    assert repr(model) == (
        "TorchRNN(4, 8, nonlinearity='relu', batch_first=True, bidirectional=True)"
    )
    meta, _, path = case("gru_no_bias")
    model = load(meta, path)
    assert repr(model) == "TorchGRU(6, 9, bias=False)"
    assert model.output_size == 9


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.GRU(5, 8, num_layers=2, bidirectional=True, batch_first=True),
        lambda nn: nn.RNN(5, 8, nonlinearity="relu", num_layers=2),
        lambda nn: nn.GRUCell(5, 8),
        lambda nn: nn.RNNCell(5, 8, nonlinearity="relu"),
    ],
    ids=["gru", "rnn_relu", "gru_cell", "rnn_cell"],
)
def test_live_modules(make):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    module = make(torch.nn)
    model = fastlstm.from_torch(module)
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        if "Cell" in type(module).__name__:
            want = module(x[:, 0]).numpy()
            got = model(x[:, 0].numpy())
        else:
            want = module(x)[0].numpy()
            got = model(x.numpy())[0]
    assert np.abs(got - want).max() <= TOL_F32


def test_read_state_dict_runs_a_linear_head(tmp_path):
    """fastlstm.read_state_dict gives every tensor, so a model's Linear head
    (which load() leaves out) runs in NumPy on the recurrent output."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(5)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(4, 6, batch_first=True)
            self.head = torch.nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.gru(x)[0][:, -1])

    net = Net().eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "epoch": 3}, path)
    sd = fastlstm.read_state_dict(path)
    assert set(sd) == {f"model.{k}" for k in net.state_dict()}
    x = torch.randn(3, 9, 4)
    with torch.no_grad():
        want = net(x).numpy()
    out, _ = fastlstm.load(path, batch_first=True)(x.numpy())
    got = out[:, -1] @ sd["model.head.weight"].T + sd["model.head.bias"]
    assert np.abs(got - want).max() <= TOL_F32
    onnx_file = FIXTURES / "gru_basic" / "ref.npz"
    with pytest.raises(fastlstm.ModelFormatError, match="not a torch.save"):
        fastlstm.read_state_dict(onnx_file)
