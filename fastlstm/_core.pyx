# The Cython side of the C core: owns packed layers, fills the BLAS table
# from SciPy, maps status codes to exceptions, and releases the GIL around
# every kernel call. Public API lives in fastlstm/lstm.py; callers here have
# already validated and converted their arrays, the checks below are the
# safety net that keeps any path into C from crashing.
from libc.stdint cimport int32_t, uint8_t
from libc.stdlib cimport getenv
from libc.string cimport memset
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from scipy.linalg.cython_blas cimport sgemm, sgemv

cimport numpy as cnp
import numpy as np

from fastlstm.errors import (
    ConfigError,
    FastLSTMError,
    NonFiniteError,
    ShapeError,
    StreamError,
)

cnp.import_array()

cdef fl_blas _BLAS
_BLAS.sgemm = <fl_sgemm_fn>sgemm
_BLAS.sgemv = <fl_sgemv_fn>sgemv

MAX_DIM = FL_MAX_DIM

# C enum values, exported so tests can check the Python mirrors.
ACTIVATION_VALUES = {
    "TANH": FL_ACT_TANH,
    "SIGMOID": FL_ACT_SIGMOID,
    "HARD_SIGMOID_K2": FL_ACT_HARD_SIGMOID_K2,
    "HARD_SIGMOID_K3": FL_ACT_HARD_SIGMOID_K3,
    "RELU": FL_ACT_RELU,
    "LINEAR": FL_ACT_LINEAR,
    "SOFTSIGN": FL_ACT_SOFTSIGN,
    "ELU": FL_ACT_ELU,
    "SELU": FL_ACT_SELU,
    "SOFTPLUS": FL_ACT_SOFTPLUS,
    "EXPONENTIAL": FL_ACT_EXPONENTIAL,
}

_STATUS_ERRORS = {
    FL_ERR_ARG: ShapeError,
    FL_ERR_SHAPE: ShapeError,
    FL_ERR_NOMEM: MemoryError,
    FL_ERR_NONFINITE: NonFiniteError,
    FL_ERR_UNSUPPORTED: ConfigError,
    FL_ERR_OVERFLOW: ShapeError,
}


cdef int _check(fl_status st, str where) except -1:
    if st == FL_OK:
        return 0
    cls = _STATUS_ERRORS.get(st, FastLSTMError)
    raise cls(f"{where}: {fl_status_message(st).decode('ascii')}")


cdef fl_run _sizing_run(int batch, int steps, int chunk_steps, int threads,
                             int keep_copies, bint amx, bint woven) noexcept:
    """A run description for sizing and planning (no arrays)."""
    cdef fl_run run
    memset(&run, 0, sizeof(run))
    run.batch = batch
    run.steps = steps
    run.chunk_steps = chunk_steps
    run.threads = threads
    run.keep_copies = keep_copies
    run.no_amx = not amx
    run.no_woven = not woven
    return run


# fl_path's names, by value (fastlstm.h)
PATHS = ("tiles", "threads", "woven", "stepwise", "chunked")
CHUNK_AUTO = FL_CHUNK_AUTO


def amx_available():
    """Whether this CPU and OS run input projections on AMX tiles
    (float32 accuracy through a three-way bfloat16 split)."""
    return bool(fl_amx_available())


cdef bint _env_on(const char *name) noexcept:
    """Whether an environment variable is set to a non-empty value (read
    from the C environment, which os.environ updates: much cheaper per call
    than os.environ.get)."""
    cdef const char *v = getenv(name)
    return v is not NULL and v[0] != 0


def woven_available():
    """Whether batch-1 calls on one thread here weave each chunk's input
    projection into the previous chunk's recurrent products (AVX-512)."""
    return bool(fl_woven_available())


def status_message(int status):
    """The C core's message for a status code."""
    return fl_status_message(<fl_status>status).decode("ascii")


def _test_activation(int activation, float[::1] values):
    """Applies an activation in place with the kernel's own code (tests)."""
    cdef size_t n = values.shape[0]
    cdef float *ptr = &values[0] if n else NULL
    cdef fl_status st
    with nogil:
        st = fl_activation_apply(<fl_activation>activation, ptr, n)
    _check(st, "activation")


cdef inline void _expect(bint ok, str message) except *:
    if not ok:
        raise ShapeError(message)


cdef class ThreadPool:
    """Worker threads that sleep between calls (fl_pool): lets one
    streaming step use several cores without starting threads per step."""

    cdef fl_pool *_pool
    cdef readonly int threads

    def __cinit__(self, int threads):
        self._pool = NULL
        _expect(2 <= threads <= 8, f"a pool has 2 to 8 threads, got {threads}")
        _check(fl_pool_create(threads, &self._pool), "thread pool")
        self.threads = threads

    def __dealloc__(self):
        if self._pool is not NULL:
            fl_pool_free(self._pool)
            self._pool = NULL


cdef inline fl_pool *_pool_of(ThreadPool pool):
    return pool._pool if pool is not None else NULL


cdef int _fill_run(fl_run *run, const float[:, :, ::1] x, bint batch_major,
                   float[:, ::1] h, int input_size, int R, uint8_t[::1] seen,
                   float[:, :, ::1] y, float[:, ::1] y_last,
                   const uint8_t[:, ::1] mask, const int32_t[::1] lengths,
                   bint reverse, bint zero_output, bint check_finite) except -1:
    """Checks a forward call's arrays against each other and fills the run
    (c, chunking and threads left at zero for the caller)."""
    cdef int B = x.shape[0] if batch_major else x.shape[1]
    cdef int T = x.shape[1] if batch_major else x.shape[0]
    # messages are formatted only on failure (an f-string argument would
    # be built on every call: ~1 us of a 6 us small call)
    if x.shape[2] != input_size:
        raise ShapeError(
            f"x has {x.shape[2]} features, the layer expects {input_size}")
    _expect(B >= 1 and T >= 1, "x needs at least one batch row and one step")
    if h.shape[0] != B or h.shape[1] != R:
        raise ShapeError(f"h must be ({B}, {R})")
    if seen is not None and seen.shape[0] != B:
        raise ShapeError(f"seen must be ({B},)")
    if y is not None:
        _expect(y.shape[0] == x.shape[0] and y.shape[1] == x.shape[1]
                and y.shape[2] == R, "y has the wrong shape")
    if y_last is not None and (y_last.shape[0] != B or y_last.shape[1] != R):
        raise ShapeError(f"y_last must be ({B}, {R})")
    if mask is not None:
        _expect(mask.shape[0] == x.shape[0] and mask.shape[1] == x.shape[1],
                "mask has the wrong shape")
    if lengths is not None and lengths.shape[0] != B:
        raise ShapeError(f"lengths must be ({B},)")
    memset(run, 0, sizeof(fl_run))
    run.batch = B
    run.steps = T
    run.batch_major = batch_major
    run.x = &x[0, 0, 0]
    run.mask = &mask[0, 0] if mask is not None else NULL
    run.lengths = &lengths[0] if lengths is not None else NULL
    run.reverse = reverse
    run.mask_output = FL_MASK_ZERO if zero_output else FL_MASK_CARRY
    run.check_finite = check_finite
    run.h = &h[0, 0]
    run.seen = &seen[0] if seen is not None else NULL
    run.y = &y[0, 0, 0] if y is not None else NULL
    run.y_last = &y_last[0, 0] if y_last is not None else NULL
    return 0


cdef void *_workspace(uint8_t[::1] work, size_t need, size_t *bytes) except? NULL:
    """The caller's workspace if it holds `need` bytes, else a new one
    (PyMem_RawMalloc: visible to tracemalloc, callable nogil) that the
    caller frees; its size into bytes."""
    cdef void *buf
    if work is not None and <size_t>work.shape[0] >= need:
        bytes[0] = <size_t>work.shape[0]
        return &work[0]
    buf = PyMem_RawMalloc(need)
    if buf is NULL:
        raise MemoryError(f"cannot allocate a {need}-byte workspace")
    bytes[0] = need
    return buf


# How the core stores the weights (fl_weight_layout): "auto" picks panels
# for layers larger than a core's L2, where a batch-1 step reads them faster.
_WEIGHT_LAYOUTS = {"auto": FL_LAYOUT_AUTO, "rows": FL_LAYOUT_ROWS,
                   "panels": FL_LAYOUT_PANELS}


cdef class PackedLSTM:
    """One LSTM direction packed by the C core. Immutable, thread-safe.

    ``weight_layout`` ("auto", "rows" or "panels") chooses how the core
    stores the weights; "auto" takes panels of 128 columns for layers of
    256 KB or more (units a multiple of 16, CPUs without AMX), which a batch-1
    step streams faster, and rows otherwise. The attribute of the same name
    says which one is in use. Outputs do not depend on it.
    """

    cdef fl_lstm *_lstm
    cdef readonly int input_size
    cdef readonly int units
    cdef readonly int proj_size
    cdef readonly int output_size
    cdef readonly str weight_layout

    def __cinit__(self):
        self._lstm = NULL

    def __init__(self, const float[:, ::1] kernel,
                 const float[:, ::1] recurrent_kernel,
                 bias, peepholes, projection,
                 int activation, int recurrent_activation,
                 cell_clip=None, proj_clip=None, str weight_layout="auto"):
        cdef fl_lstm_desc desc
        cdef const float[::1] b_v
        cdef const float[:, ::1] p_v
        cdef const float[:, ::1] proj_v
        cdef const float *b_ptr = NULL
        cdef const float *p_ptr = NULL
        cdef const float *proj_ptr = NULL
        cdef fl_lstm *out = NULL
        cdef fl_status st

        if self._lstm is not NULL:  # another thread may be running on it
            raise TypeError("a PackedLSTM is immutable: __init__ runs once; "
                            "create a new PackedLSTM instead")
        _expect(kernel.shape[1] % 4 == 0, "kernel width must be 4*units")
        desc.input_size = kernel.shape[0]
        desc.units = kernel.shape[1] // 4
        desc.proj_size = 0 if projection is None else projection.shape[1]
        desc.activation = <fl_activation>activation
        desc.recurrent_activation = <fl_activation>recurrent_activation
        desc.use_cell_clip = cell_clip is not None
        desc.cell_clip = cell_clip if cell_clip is not None else 0.0
        desc.use_proj_clip = proj_clip is not None
        desc.proj_clip = proj_clip if proj_clip is not None else 0.0
        if weight_layout not in _WEIGHT_LAYOUTS:
            raise ConfigError(f"weight_layout must be one of "
                              f"{sorted(_WEIGHT_LAYOUTS)}, got {weight_layout!r}")
        if weight_layout == "panels" and desc.units % 16:
            raise ConfigError(f"weight_layout='panels' needs units divisible "
                              f"by 16, got {desc.units}")
        desc.weight_layout = <fl_weight_layout>_WEIGHT_LAYOUTS[weight_layout]
        cdef int R = desc.proj_size if desc.proj_size else desc.units
        _expect(recurrent_kernel.shape[0] == R
                and recurrent_kernel.shape[1] == 4 * desc.units,
                "recurrent_kernel shape does not match kernel/projection")
        if bias is not None:
            b_v = bias
            _expect(b_v.shape[0] == 4 * desc.units, "bias must be (4*units,)")
            b_ptr = &b_v[0]
        if peepholes is not None:
            p_v = peepholes
            _expect(p_v.shape[0] == 3 and p_v.shape[1] == desc.units,
                    "peepholes must be (3, units)")
            p_ptr = &p_v[0, 0]
        if projection is not None:
            proj_v = projection
            _expect(proj_v.shape[0] == desc.units, "projection must be (units, P)")
            proj_ptr = &proj_v[0, 0]
        with nogil:
            st = fl_lstm_create(&desc, &kernel[0, 0], &recurrent_kernel[0, 0],
                                b_ptr, p_ptr, proj_ptr, &out)
        _check(st, "creating the LSTM layer")
        self._lstm = out
        fl_lstm_get_desc(out, &desc)
        self.weight_layout = "panels" if desc.weight_layout == FL_LAYOUT_PANELS else "rows"
        self.input_size = desc.input_size
        self.units = desc.units
        self.proj_size = desc.proj_size
        self.output_size = R

    def __dealloc__(self):
        if self._lstm is not NULL:
            fl_lstm_free(self._lstm)
            self._lstm = NULL

    def workspace_size(self, int batch, int steps, int chunk_steps=0,
                       int threads=1, int keep_copies=0, bint amx=True,
                       bint woven=True):
        """Bytes of workspace a forward call of this size needs (with the
        per-thread weight copies a multi-thread batch-1 call can use)."""
        cdef size_t n = 0
        cdef fl_run run = _sizing_run(batch, steps, chunk_steps, threads,
                                           keep_copies, amx, woven)
        _check(fl_lstm_run_workspace_size(self._lstm, &run, &n), "workspace size")
        return n

    def plan(self, int batch, int steps, int chunk_steps=FL_CHUNK_AUTO,
             int threads=1, bint with_y=True, bint amx=True, bint woven=True,
             int keep_copies=0, bint pool=False, work_bytes=None):
        """How the C core would run a forward call of this size (its one
        dispatch point, fl_plan.c): a dict with 'path' (one of PATHS),
        'chunk_steps', 'amx', 'wh_copy', 'thread_copies', 'threads_woven'
        and 'workspace_bytes'. work_bytes: the caller's workspace (default:
        the call's own size). pool: the call runs on a thread pool."""
        if self._lstm is NULL:
            raise ShapeError("PackedLSTM was not initialized")
        cdef float y_dummy = 0
        cdef fl_plan_info info
        cdef fl_run run = _sizing_run(batch, steps, chunk_steps, threads,
                                           keep_copies, amx, woven)
        run.y = &y_dummy if with_y else NULL  # planning only tests it for NULL
        run.pool = <fl_pool *>&y_dummy if pool else NULL
        cdef size_t limit = <size_t>-1 if work_bytes is None else <size_t>work_bytes
        _check(fl_lstm_plan(self._lstm, &run, limit, &info), "planning the call")
        return {
            "path": PATHS[<int>info.path],
            "chunk_steps": info.chunk_steps,
            "amx": bool(info.amx),
            "wh_copy": bool(info.wh_copy),
            "thread_copies": bool(info.thread_copies),
            "threads_woven": bool(info.threads_woven),
            "workspace_bytes": info.workspace_bytes,
        }

    def forward(self, const float[:, :, ::1] x, bint batch_major,
                float[:, ::1] h, float[:, ::1] c,
                uint8_t[::1] seen=None,
                float[:, :, ::1] y=None,
                float[:, ::1] y_last=None,
                const uint8_t[:, ::1] mask=None,
                const int32_t[::1] lengths=None,
                bint reverse=False, bint zero_output=False,
                bint check_finite=True, int chunk_steps=0,
                uint8_t[::1] work=None, int threads=1, ThreadPool pool=None,
                object amx=None, object woven=None):
        """Runs the layer; h, c (and seen) are updated in place.

        x is (batch, steps, I) when batch_major else (steps, batch, I); mask
        and y follow the same layout. amx=False keeps the input projection
        off AMX tiles (see amx_available); woven=False keeps batch-1
        input projections on BLAS (see woven_available); None (default)
        leaves each to the environment (FASTLSTM_NO_AMX,
        FASTLSTM_NO_WOVEN). Raises on any inconsistency.
        """
        if self._lstm is NULL:
            raise ShapeError("PackedLSTM was not initialized")
        cdef fl_run run
        _fill_run(&run, x, batch_major, h, self.input_size, self.output_size,
                  seen, y, y_last, mask, lengths, reverse, zero_output,
                  check_finite)
        if c.shape[0] != run.batch or c.shape[1] != self.units:
            raise ShapeError(f"c must be ({run.batch}, {self.units})")
        run.c = &c[0, 0]
        cdef int B = run.batch, T = run.steps
        run.chunk_steps = chunk_steps
        run.threads = threads
        run.pool = _pool_of(pool)
        run.sweep = 0
        run.keep_copies = 0
        run.no_amx = _env_on(b"FASTLSTM_NO_AMX") if amx is None else not amx
        run.no_woven = (_env_on(b"FASTLSTM_NO_WOVEN") if woven is None
                          else not woven)

        # the run's own size includes per-thread weight copies (faster); a
        # caller's workspace of the plain size also works, without them
        cdef size_t need = 0, plain = 0, nbytes = 0
        _check(fl_lstm_run_workspace_size(self._lstm, &run, &need),
               "workspace size")
        if work is not None and <size_t>work.shape[0] < need:
            _check(fl_lstm_workspace_size(self._lstm, B, T, chunk_steps,
                                          &plain), "workspace size")
            if <size_t>work.shape[0] >= plain:
                need = <size_t>work.shape[0]
        cdef void *buf = _workspace(work, need, &nbytes)
        cdef bint owned = work is None or buf != <void *>&work[0]
        cdef fl_status st
        with nogil:
            st = fl_lstm_forward(self._lstm, &_BLAS, &run, buf, nbytes)
        if owned:
            PyMem_RawFree(buf)
        _check(st, "LSTM forward")


# fl_layer_kind's values, by the names the specs use
LAYER_KINDS = {"gru": FL_LAYER_GRU, "simple": FL_LAYER_SIMPLE}


cdef class PackedLayer:
    """One GRU or simple RNN direction packed by the C core (fl_layer).
    Immutable, thread-safe. ``kind`` is "gru" or "simple"; the weights are
    canonical (fastlstm.h): kernel (I, G*units), recurrent_kernel (units,
    G*units), bias and recurrent_bias (G*units,) or None, G = 3 for a GRU
    (gate blocks z, r, n) and 1 for a simple RNN."""

    cdef fl_layer *_layer
    cdef readonly str kind
    cdef readonly int input_size
    cdef readonly int units
    cdef readonly int output_size
    cdef readonly bint reset_after

    def __cinit__(self):
        self._layer = NULL

    def __init__(self, str kind, const float[:, ::1] kernel,
                 const float[:, ::1] recurrent_kernel, bias, recurrent_bias,
                 int activation, int recurrent_activation=FL_ACT_SIGMOID,
                 bint reset_after=True):
        cdef fl_layer_desc desc
        cdef const float[::1] b_v
        cdef const float[::1] rb_v
        cdef const float *b_ptr = NULL
        cdef const float *rb_ptr = NULL
        cdef fl_layer *out = NULL
        cdef fl_status st
        if self._layer is not NULL:  # another thread may be running on it
            raise TypeError("a PackedLayer is immutable: __init__ runs once")
        if kind not in LAYER_KINDS:
            raise ConfigError(f"kind must be one of {sorted(LAYER_KINDS)}, "
                              f"got {kind!r}")
        cdef int G = 3 if kind == "gru" else 1
        _expect(kernel.shape[1] % G == 0, f"kernel width must be {G}*units")
        desc.kind = <fl_layer_kind>LAYER_KINDS[kind]
        desc.input_size = kernel.shape[0]
        desc.units = kernel.shape[1] // G
        desc.activation = <fl_activation>activation
        desc.recurrent_activation = <fl_activation>recurrent_activation
        desc.reset_after = reset_after
        _expect(recurrent_kernel.shape[0] == desc.units
                and recurrent_kernel.shape[1] == G * desc.units,
                "recurrent_kernel shape does not match the kernel")
        if bias is not None:
            b_v = bias
            _expect(b_v.shape[0] == G * desc.units, "bias must be (G*units,)")
            b_ptr = &b_v[0]
        if recurrent_bias is not None:
            rb_v = recurrent_bias
            _expect(rb_v.shape[0] == G * desc.units,
                    "recurrent_bias must be (G*units,)")
            rb_ptr = &rb_v[0]
        with nogil:
            st = fl_layer_create(&desc, &kernel[0, 0], &recurrent_kernel[0, 0],
                                 b_ptr, rb_ptr, &out)
        _check(st, f"creating the {kind} layer")
        self._layer = out
        fl_layer_get_desc(out, &desc)
        self.kind = kind
        self.input_size = desc.input_size
        self.units = desc.units
        self.output_size = desc.units
        self.reset_after = desc.reset_after

    def __dealloc__(self):
        if self._layer is not NULL:
            fl_layer_free(self._layer)
            self._layer = NULL

    def workspace_size(self, int batch, int steps, int chunk_steps=0,
                       bint with_y=True, int threads=1):
        """Bytes of workspace a forward call of this size needs."""
        cdef size_t n = 0
        cdef float y_dummy = 0
        cdef fl_run run = _sizing_run(batch, steps, chunk_steps, threads, 0,
                                      False, False)
        run.y = &y_dummy if with_y else NULL  # sizing only tests it for NULL
        _check(fl_layer_workspace_size(self._layer, &run, &n), "workspace size")
        return n

    def forward(self, const float[:, :, ::1] x, bint batch_major,
                float[:, ::1] h, uint8_t[::1] seen=None,
                float[:, :, ::1] y=None, float[:, ::1] y_last=None,
                const uint8_t[:, ::1] mask=None,
                const int32_t[::1] lengths=None,
                bint reverse=False, bint zero_output=False,
                bint check_finite=True, int chunk_steps=0,
                uint8_t[::1] work=None, int threads=1, ThreadPool pool=None):
        """Runs the layer; h (and seen) are updated in place. Layouts as
        PackedLSTM.forward; threads split each step's units (parts of 32
        or more), on the pool's workers when given."""
        if self._layer is NULL:
            raise ShapeError("PackedLayer was not initialized")
        cdef fl_run run
        _fill_run(&run, x, batch_major, h, self.input_size, self.output_size,
                  seen, y, y_last, mask, lengths, reverse, zero_output,
                  check_finite)
        run.chunk_steps = chunk_steps
        run.threads = threads
        run.pool = _pool_of(pool)
        cdef size_t need = 0, nbytes = 0
        _check(fl_layer_workspace_size(self._layer, &run, &need),
               "workspace size")
        cdef void *buf = _workspace(work, need, &nbytes)
        cdef bint owned = work is None or buf != <void *>&work[0]
        cdef fl_status st
        with nogil:
            st = fl_layer_forward(self._layer, &_BLAS, &run, buf, nbytes)
        if owned:
            PyMem_RawFree(buf)
        _check(st, f"{self.kind} forward")


_BUSY_MESSAGE = ("this stream is being used by another thread; streams hold "
                 "mutable state, create one stream per thread")


cdef inline bint _is_plain(object a, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                           bint writeable):
    """Whether ``a`` is a float32 ndarray of shape (d0,) or (d0, d1) that the
    C core can read (and write) in place: C-contiguous, aligned, in native
    byte order."""
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32
            and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)
            and (not writeable or cnp.PyArray_ISWRITEABLE(arr))
            and cnp.PyArray_DIM(arr, 0) == d0
            and (ndim == 1 or cnp.PyArray_DIM(arr, 1) == d1))


cdef class StreamGuard:
    """One stream's busy flag. ``with guard:`` tests and sets it with no
    Python code in between, so under the GIL the two are one step: a second
    thread gets StreamError instead of running on the same state. Every
    stream takes its guard before any work and releases it after the last
    layer."""

    cdef readonly bint busy

    cdef int take(self) except -1:
        """Tests and sets the flag (a step's fast path calls this directly)."""
        if self.busy:
            raise StreamError(_BUSY_MESSAGE)
        self.busy = True
        return 0

    def __enter__(self):
        self.take()
        return self

    def __exit__(self, *exc):
        self.busy = False
        return False


cdef class StreamCore:
    """The per-step path of a stream, kept in C: fastlstm.lstm.LSTMStream
    subclasses it, so ``stream.step(x)`` calls this method directly.

    Holds the stream's state arrays (h, c, seen), a workspace for one step,
    and the stream's guard (``guard``), taken before any work of ``step``.
    """

    cdef object _packed_core  # a PackedLSTM or a PackedLayer
    cdef fl_lstm *_lstm_p      # the packed LSTM, or NULL
    cdef fl_layer *_layer_p    # the packed GRU or simple RNN, or NULL
    cdef int _input_size
    cdef int _output_size
    cdef readonly int batch
    cdef readonly object _h
    cdef readonly object _c
    cdef readonly object _seen
    cdef object _work
    cdef float *_hp
    cdef float *_cp
    cdef uint8_t *_seenp
    cdef void *_workp
    cdef size_t _work_bytes
    cdef bint _zero_output
    cdef bint _check_finite
    cdef readonly StreamGuard guard
    cdef int _sweep
    cdef int _keep_copies
    cdef readonly int threads
    cdef readonly ThreadPool _pool

    def _init_core(self, packed, int batch, bint zero_output,
                   bint check_finite, int threads=1):
        """packed: a PackedLSTM (state h, c) or a PackedLayer (state h)."""
        if self.guard is not None:  # another thread may be stepping
            raise TypeError("a stream is initialised once; create a new one")
        self.guard = StreamGuard()
        self._packed_core = packed
        self.batch = batch
        self._input_size = packed.input_size
        self._output_size = packed.output_size
        self._h = np.zeros((batch, packed.output_size), np.float32)
        self._seen = np.zeros(batch, np.uint8)
        self._lstm_p = NULL
        self._layer_p = NULL
        if isinstance(packed, PackedLSTM):
            self._lstm_p = (<PackedLSTM>packed)._lstm
            self._c = np.zeros((batch, packed.units), np.float32)
            self._cp = <float *>cnp.PyArray_DATA(self._c)
            # with threads, the workspace keeps each thread's copy of its
            # weights from the first step on (keep_copies 1, then 2)
            self._keep_copies = 1 if threads > 1 else 0
            self._work_bytes = packed.workspace_size(
                batch, 1, threads=threads, keep_copies=self._keep_copies)
        else:
            self._layer_p = (<PackedLayer>packed)._layer
            self._c = None
            self._cp = NULL
            self._keep_copies = 0
            self._work_bytes = packed.workspace_size(batch, 1, with_y=False,
                                                     threads=threads)
        self.threads = threads
        self._pool = ThreadPool(threads) if threads > 1 else None
        self._work = np.empty(self._work_bytes, np.uint8)
        self._hp = <float *>cnp.PyArray_DATA(self._h)
        self._seenp = <uint8_t *>cnp.PyArray_DATA(self._seen)
        self._workp = cnp.PyArray_DATA(self._work)
        self._zero_output = zero_output
        self._check_finite = check_finite
        self._sweep = 0

    def step(self, x, mask=None, out=None):
        """Runs one time step: x (batch, features) -> output (batch, R).

        ``mask`` (batch,) marks the rows whose step is valid; ``out`` is an
        optional preallocated float32 (batch, R) array to write into.
        """
        cdef StreamGuard guard = self.guard
        if guard is None:
            raise StreamError("this stream was not initialised")
        guard.take()
        try:
            return self._step(x, mask, out)
        finally:
            guard.busy = False

    cdef object _step(self, x, mask, out):
        cdef cnp.ndarray xa
        cdef cnp.ndarray ma
        cdef cnp.ndarray oa
        cdef int n_in = self._input_size, n_out = self._output_size
        if not _is_plain(x, 2, self.batch, n_in, False):
            x = self._step_input(x)  # converts or raises a named error
        xa = <cnp.ndarray>x
        cdef const uint8_t *mp = NULL
        if mask is not None:
            ma = self._step_mask(mask)
            mp = <const uint8_t *>cnp.PyArray_DATA(ma)
        if out is None:
            oa = cnp.PyArray_EMPTY(2, [self.batch, n_out],
                                   cnp.NPY_FLOAT32, 0)
        else:
            if not _is_plain(out, 2, self.batch, n_out, True):
                raise ShapeError(
                    f"out must be a writeable C-contiguous float32 array in "
                    f"native byte order, of shape ({self.batch}, {n_out})"
                )
            oa = <cnp.ndarray>out
        cdef fl_run run
        run.batch = self.batch
        run.steps = 1
        run.batch_major = 1
        run.x = <const float *>cnp.PyArray_DATA(xa)
        run.mask = mp
        run.lengths = NULL
        run.reverse = 0
        run.mask_output = FL_MASK_ZERO if self._zero_output else FL_MASK_CARRY
        run.check_finite = self._check_finite
        run.h = self._hp
        run.c = self._cp
        run.seen = self._seenp
        run.y = NULL
        run.y_last = <float *>cnp.PyArray_DATA(oa)
        run.chunk_steps = 0
        run.threads = self.threads
        run.pool = _pool_of(self._pool)
        run.sweep = self._sweep
        run.keep_copies = self._keep_copies
        run.no_amx = 0  # as the workspace was sized
        run.no_woven = 0
        cdef fl_status st
        with nogil:
            if self._lstm_p is not NULL:
                st = fl_lstm_forward(self._lstm_p, &_BLAS, &run, self._workp,
                                     self._work_bytes)
            else:
                st = fl_layer_forward(self._layer_p, &_BLAS, &run, self._workp,
                                      self._work_bytes)
        self._sweep ^= 1  # the next step reads the weights the other way
        if self._keep_copies == 1 and st == FL_OK:
            self._keep_copies = 2  # the copies are in the workspace now
        if st == FL_ERR_NONFINITE:
            self._raise_nonfinite(xa, mask)
        _check(st, "stream step")
        return oa


# fl_stage_kind by name, for the stage tuples ChainCore takes
_STAGE_KINDS = {
    "masking": FL_STAGE_MASKING,
    "dense": FL_STAGE_DENSE,
    "activation": FL_STAGE_ACTIVATION,
    "softmax": FL_STAGE_SOFTMAX,
    "affine": FL_STAGE_AFFINE,
    "embedding": FL_STAGE_EMBEDDING,
    "layernorm": FL_STAGE_LAYER_NORM,
}


cdef class ChainCore:
    """The per-step path of a model stream, kept in C (fl_chain_step): one
    call runs a time step through every layer.

    Takes its stages as tuples: ("masking", size, mask_value, keep_nan),
    ("recurrent", stream, masked, sequence_output) with an engine stream
    (a StreamCore) whose state arrays the chain steps, ("dense", kernel,
    bias or None, activation), ("activation", size, activation),
    ("softmax", size), ("affine", scale, shift), ("layernorm", size,
    gamma or None, beta or None, epsilon, rms_scaling), ("embedding", table,
    mask_zero) (first, on token ids as floats); float32 C-contiguous
    arrays. ``convert(x)`` turns any other input into a (batch, features)
    float32 array ((batch,) token ids for an embedding first) or raises
    the model's own error; ``slow(x)`` runs the step through the model
    graph, for the message of a failed step (leaving the state as it was).
    """

    cdef fl_stage *_stages
    cdef fl_run *_runs
    cdef int _n
    cdef readonly int batch
    cdef readonly int input_size
    cdef readonly int output_size
    cdef bint _ids  # a step's input is (batch,) token ids, not (batch, features)
    cdef list _keep  # what the stages point into
    cdef object _work
    cdef size_t _work_bytes
    cdef readonly StreamGuard guard
    cdef object _convert
    cdef object _slow

    def __cinit__(self):
        self._stages = NULL
        self._runs = NULL

    def __dealloc__(self):
        PyMem_RawFree(self._stages)
        PyMem_RawFree(self._runs)

    def _init_chain(self, list stages, int batch, StreamGuard guard, convert,
                    slow):
        if self._stages is not NULL:
            raise TypeError("a chain is initialised once; create a new one")
        cdef int n = len(stages)
        if n < 1 or batch < 1:
            raise ShapeError("a chain needs one stage or more and a batch")
        self._stages = <fl_stage *>PyMem_RawMalloc(n * sizeof(fl_stage))
        self._runs = <fl_run *>PyMem_RawMalloc(n * sizeof(fl_run))
        if self._stages is NULL or self._runs is NULL:
            raise MemoryError("cannot allocate a chain")
        memset(self._stages, 0, n * sizeof(fl_stage))
        memset(self._runs, 0, n * sizeof(fl_run))
        self._n, self.batch, self.guard = n, batch, guard
        self._convert, self._slow, self._keep = convert, slow, []
        cdef int k
        for k in range(n):
            self._fill_stage(k, stages[k])
        self.input_size = self._stages[0].in_size
        self.output_size = self._stages[n - 1].out_size
        self._ids = self._stages[0].kind == FL_STAGE_EMBEDDING
        cdef size_t need = 0
        _check(fl_chain_workspace_size(self._stages, n, batch, &need), "chain")
        self._work = np.empty(need, np.uint8)
        self._work_bytes = need

    cdef float *_array(self, a, int size) except NULL:
        """The data of a float32 C-contiguous array of `size` elements,
        kept alive with the chain."""
        cdef cnp.ndarray arr = np.ascontiguousarray(a, dtype=np.float32)
        if arr.size != size:
            raise ShapeError(f"chain: an array of {size} values expected")
        self._keep.append(arr)
        return <float *>cnp.PyArray_DATA(arr)

    cdef int _fill_stage(self, int k, tuple t) except -1:
        cdef fl_stage *s = &self._stages[k]
        cdef str kind = t[0]
        if kind == "recurrent":
            return self._fill_recurrent(k, t[1], t[2], t[3])
        s.kind = _STAGE_KINDS[kind]
        if kind == "dense":
            kernel = np.asarray(t[1])
            s.in_size, s.out_size = kernel.shape
            s.kernel = self._array(kernel, kernel.size)
            s.bias = NULL if t[2] is None else self._array(t[2], s.out_size)
            s.activation = <fl_activation>t[3]
            return 0
        if kind == "embedding":
            table = np.asarray(t[1])
            s.vocab, s.out_size = table.shape
            s.in_size = 1
            s.kernel = self._array(table, table.size)
            s.mask_zero = t[2]
            return 0
        s.in_size = s.out_size = t[1] if kind != "affine" else np.size(t[1])
        if kind == "masking":
            s.mask_value, s.keep_nan = t[2], t[3]
        elif kind == "activation":
            s.activation = <fl_activation>t[2]
        elif kind == "affine":
            s.scale = self._array(t[1], s.in_size)
            s.shift = self._array(t[2], s.in_size)
        elif kind == "layernorm":
            s.scale = NULL if t[2] is None else self._array(t[2], s.in_size)
            s.shift = NULL if t[3] is None else self._array(t[3], s.in_size)
            s.epsilon, s.rms_scaling = t[4], t[5]
        return 0

    cdef int _fill_recurrent(self, int k, StreamCore core, bint masked,
                             bint sequence_output) except -1:
        cdef fl_stage *s = &self._stages[k]
        cdef fl_run *run = &self._runs[k]
        s.kind = FL_STAGE_LSTM if core._lstm_p is not NULL else FL_STAGE_LAYER
        s.lstm, s.layer = core._lstm_p, core._layer_p
        s.in_size, s.out_size = core._input_size, core._output_size
        s.masked, s.sequence_output = masked, sequence_output
        run.batch = core.batch
        run.steps = 1
        run.batch_major = 1
        run.h, run.c, run.seen = core._hp, core._cp, core._seenp
        run.mask_output = FL_MASK_ZERO if core._zero_output else FL_MASK_CARRY
        run.check_finite = core._check_finite
        run.threads = core.threads
        run.pool = _pool_of(core._pool)
        run.keep_copies = 1 if core.threads > 1 else 0
        cdef float probe = 0
        if sequence_output:  # sizing only tests y and y_last for NULL
            run.y = &probe
        else:
            run.y_last = &probe
        cdef size_t need = 0
        if s.lstm is not NULL:
            _check(fl_lstm_run_workspace_size(s.lstm, run, &need), "chain")
        else:
            _check(fl_layer_workspace_size(s.layer, run, &need), "chain")
        run.y = run.y_last = NULL
        work = np.empty(need, np.uint8)
        self._keep += [core, work]
        s.run, s.work, s.work_bytes = run, cnp.PyArray_DATA(work), need
        return 0

    def step(self, x, out=None):
        """Runs one time step: x (batch, features) -> (batch, outputs),
        written into ``out`` (a float32 array of that shape) if given."""
        cdef StreamGuard guard = self.guard
        if guard is None:
            raise StreamError("this chain was not initialised")
        guard.take()
        try:
            return self._step(x, out)
        finally:
            guard.busy = False

    cdef object _step(self, x, out):
        given = x  # what the graph reruns if the step fails
        cdef int ndim = 1 if self._ids else 2
        if not _is_plain(x, ndim, self.batch, self.input_size, False):
            x = self._convert(x)
            if not _is_plain(x, ndim, self.batch, self.input_size, False):
                raise ShapeError(
                    f"a step takes {self.input_size} features per row; the "
                    f"model's declared input does not match its first layer"
                )
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef cnp.ndarray oa
        if out is None:
            oa = cnp.PyArray_EMPTY(2, [self.batch, self.output_size],
                                   cnp.NPY_FLOAT32, 0)
        elif _is_plain(out, 2, self.batch, self.output_size, True):
            oa = <cnp.ndarray>out
        elif (isinstance(out, np.ndarray) and out.flags.writeable
                and out.shape == (self.batch, self.output_size)):
            # another dtype, layout or byte order: the result is copied in
            np.copyto(out, self._step(given, None), casting="same_kind")
            return out
        else:
            raise ShapeError(
                f"out must be a writeable array of shape "
                f"({self.batch}, {self.output_size}), got {np.shape(out)}"
            )
        cdef fl_status st
        cdef int failed = -1  # the stage, for a debugger
        cdef void *work = cnp.PyArray_DATA(self._work)
        with nogil:
            st = fl_chain_step(self._stages, self._n, &_BLAS, self.batch,
                               <const float *>cnp.PyArray_DATA(xa),
                               <float *>cnp.PyArray_DATA(oa), work,
                               self._work_bytes, &failed)
        if st != FL_OK:
            # the state is as before the step: the model graph runs it,
            # raising its own message (a NaN input named as the model names
            # it), or giving the step
            np.copyto(oa, self._slow(given))
        return oa
