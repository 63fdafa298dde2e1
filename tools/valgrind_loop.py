"""The Python inference loop tools/valgrind_check.py runs under valgrind:
stateless calls, a 2-thread call, a 2-thread stream on its worker pool, a
batch stream, the bundled Keras model, and the readers' compiled helper
(fastlstm.loaders._sstable) on valid and random bytes."""

from pathlib import Path

import numpy as np

import fastlstm

EXAMPLES = Path(fastlstm.__file__).parent / "examples"
rng = np.random.default_rng(0)
I, H = 16, 256
w = dict(
    kernel=rng.normal(0, 0.1, (I, 4 * H)).astype(np.float32),
    recurrent_kernel=rng.normal(0, 0.1, (H, 4 * H)).astype(np.float32),
    bias=np.zeros(4 * H, np.float32),
)
layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
x = rng.normal(size=(2, 30, I)).astype(np.float32)
for _ in range(20):
    layer(x)
two = fastlstm.LSTM(**w, threads=2)
two(x[:1])
s = two.stream(1)
out = np.empty((1, H), np.float32)
for t in range(100):
    s.step(x[:1, t % 30], out=out)
s1 = layer.stream(2)
for t in range(50):
    s1.step(x[:, t % 30])
del s, s1
m = fastlstm.load(EXAMPLES / "example_model.h5")
d = np.load(EXAMPLES / "example_io.npz")
print(np.abs(m.predict(d[list(d.keys())[0]]) - d[list(d.keys())[1]]).max())

from fastlstm.loaders import _sstable  # noqa: E402

junk = np.random.default_rng(1)
for n in (0, 1, 7, 8, 9, 100, 4096):
    _sstable.crc32c(junk.integers(0, 256, n, dtype=np.uint8).tobytes())
assert _sstable.snappy_decompress(b"\x08\x0cabcd\x01\x04", 100) == b"abcdabcd"
for _ in range(300):
    data = junk.integers(0, 256, int(junk.integers(0, 64)), dtype=np.uint8).tobytes()
    for call in (
        lambda data=data: _sstable.snappy_decompress(data, 1 << 16),
        lambda data=data: _sstable.block_entries(data, 1 << 16),
    ):
        try:
            call()
        except fastlstm.ModelFormatError:
            pass
