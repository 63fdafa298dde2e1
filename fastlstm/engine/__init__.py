"""The runtime: runs canonical specs and knows no framework.

``lstm`` packs one LSTM cell into the C core and runs it, ``gru_rnn`` a GRU
or simple RNN cell; ``recurrent``
chains cells into directions, bidirectional wrappers and stacks (the one
place that reverses, flips, merges and passes states); ``layers`` holds the
non-recurrent layers (NumPy/BLAS); ``graph`` evaluates a ModelSpec graph.
"""
