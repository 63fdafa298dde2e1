"""Framework-shaped classes over the engine. Each translates one
framework's call signature, input layout and state tuples to the engine's
and back, and does nothing else: ``keras.Model`` (``predict``),
``torch.TorchLSTM`` (``nn.LSTM``), ``tf1.TF1LSTM`` (``dynamic_rnn``),
``onnx.OnnxModel`` (``InferenceSession.run``).
"""
