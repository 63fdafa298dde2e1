# Type stubs for the compiled extension fastlstm._core (fastlstm/_core.pyx).
import numpy as np

MAX_DIM: int
ACTIVATION_VALUES: dict[str, int]

def amx_available() -> bool: ...
def woven_available() -> bool: ...
def status_message(status: int) -> str: ...
def _test_activation(activation: int, values: np.ndarray) -> None: ...

class PackedLSTM:
    input_size: int
    units: int
    proj_size: int
    output_size: int
    weight_layout: str
    def __init__(
        self,
        kernel: np.ndarray,
        recurrent_kernel: np.ndarray,
        bias: np.ndarray | None,
        peepholes: np.ndarray | None,
        projection: np.ndarray | None,
        activation: int,
        recurrent_activation: int,
        cell_clip: float | None = ...,
        proj_clip: float | None = ...,
        weight_layout: str = ...,
    ) -> None: ...
    def workspace_size(
        self,
        batch: int,
        steps: int,
        chunk_steps: int = ...,
        threads: int = ...,
        keep_copies: int = ...,
        amx: bool = ...,
        woven: bool = ...,
    ) -> int: ...
    def forward(
        self,
        x: np.ndarray,
        batch_major: bool,
        h: np.ndarray,
        c: np.ndarray,
        seen: np.ndarray | None = ...,
        y: np.ndarray | None = ...,
        y_last: np.ndarray | None = ...,
        mask: np.ndarray | None = ...,
        lengths: np.ndarray | None = ...,
        reverse: bool = ...,
        zero_output: bool = ...,
        check_finite: bool = ...,
        chunk_steps: int = ...,
        work: np.ndarray | None = ...,
        threads: int = ...,
        pool: ThreadPool | None = ...,
        amx: bool = ...,
        woven: bool = ...,
    ) -> None: ...

class ThreadPool:
    threads: int
    def __init__(self, threads: int) -> None: ...

class StreamGuard:
    busy: bool
    def __enter__(self) -> StreamGuard: ...
    def __exit__(self, *exc: object) -> bool: ...

class StreamCore:
    batch: int
    threads: int
    guard: StreamGuard
    def _init_core(
        self,
        packed: PackedLSTM,
        batch: int,
        zero_output: bool,
        check_finite: bool,
        threads: int = ...,
    ) -> None: ...
    def step(
        self,
        x: np.ndarray,
        mask: np.ndarray | None = ...,
        out: np.ndarray | None = ...,
    ) -> np.ndarray: ...
