"""fastlstm against its peers (ONNX Runtime, PyTorch, NumPy, Keras) on the
same weights, in one run: ``fastlstm bench`` (cli/bench.py) or
``python -m fastlstm.bench``. The peers and matplotlib come from the
``[bench]`` extra; a peer that is not installed is skipped with a note.

Modules: ``workloads`` (weights and sizes), ``peers`` (one adapter per
engine), ``timing`` (interleaved medians), ``rows`` (one timed
configuration each), ``keras_peer`` (Keras in its own process),
``cases`` (the lettered cases), ``report`` (Markdown, JSON, PNG plots),
``runner`` (selection, progress, output).
"""
