# Mirrors src_c/fastlstm.h one to one: change both together
# (tests/test_api.py checks the enum values against fastlstm.activations).
from libc.stdint cimport int32_t, uint8_t


cdef extern from "fastlstm.h" nogil:
    int FL_MAX_DIM

    ctypedef enum fl_status:
        FL_OK
        FL_ERR_ARG
        FL_ERR_SHAPE
        FL_ERR_NOMEM
        FL_ERR_NONFINITE
        FL_ERR_UNSUPPORTED
        FL_ERR_OVERFLOW

    ctypedef enum fl_activation:
        FL_ACT_TANH
        FL_ACT_SIGMOID
        FL_ACT_HARD_SIGMOID_K2
        FL_ACT_HARD_SIGMOID_K3
        FL_ACT_RELU
        FL_ACT_LINEAR
        FL_ACT_SOFTSIGN
        FL_ACT_ELU
        FL_ACT_SELU
        FL_ACT_SOFTPLUS
        FL_ACT_EXPONENTIAL
    int FL_ACT_COUNT

    ctypedef enum fl_weight_layout:
        FL_LAYOUT_AUTO
        FL_LAYOUT_ROWS
        FL_LAYOUT_PANELS

    ctypedef enum fl_mask_output:
        FL_MASK_CARRY
        FL_MASK_ZERO

    ctypedef void (*fl_sgemm_fn)(char *transa, char *transb, int *m, int *n,
                                 int *k, float *alpha, float *a, int *lda,
                                 float *b, int *ldb, float *beta, float *c,
                                 int *ldc)
    ctypedef void (*fl_sgemv_fn)(char *trans, int *m, int *n, float *alpha,
                                 float *a, int *lda, float *x, int *incx,
                                 float *beta, float *y, int *incy)

    ctypedef struct fl_blas:
        fl_sgemm_fn sgemm
        fl_sgemv_fn sgemv

    ctypedef struct fl_lstm_desc:
        int input_size
        int units
        int proj_size
        fl_activation activation
        fl_activation recurrent_activation
        int use_cell_clip
        float cell_clip
        int use_proj_clip
        float proj_clip
        fl_weight_layout weight_layout

    ctypedef struct fl_lstm:
        pass

    ctypedef struct fl_pool:
        pass

    ctypedef struct fl_run:
        int batch
        int steps
        int batch_major
        const float *x
        const uint8_t *mask
        const int32_t *lengths
        int reverse
        fl_mask_output mask_output
        int check_finite
        float *h
        float *c
        uint8_t *seen
        float *y
        float *y_last
        int chunk_steps
        int threads
        fl_pool *pool
        int sweep
        int keep_copies
        int no_amx
        int no_woven

    fl_status fl_lstm_create(const fl_lstm_desc *desc, const float *kernel,
                             const float *recurrent_kernel, const float *bias,
                             const float *peepholes, const float *projection,
                             fl_lstm **out)
    void fl_lstm_free(fl_lstm *lstm)
    fl_status fl_lstm_get_desc(const fl_lstm *lstm, fl_lstm_desc *out)
    fl_status fl_lstm_workspace_size(const fl_lstm *lstm, int batch, int steps,
                                     int chunk_steps, size_t *out_bytes)
    fl_status fl_lstm_run_workspace_size(const fl_lstm *lstm,
                                         const fl_run *run,
                                         size_t *out_bytes)
    ctypedef enum fl_path:
        FL_PATH_TILES
        FL_PATH_THREADS
        FL_PATH_WOVEN
        FL_PATH_STEPWISE
        FL_PATH_CHUNKED

    enum:
        FL_CHUNK_AUTO

    ctypedef struct fl_plan_info:
        fl_path path
        int chunk_steps
        int amx
        int wh_copy
        int thread_copies
        int threads_woven
        size_t workspace_bytes

    fl_status fl_lstm_plan(const fl_lstm *lstm, const fl_run *run,
                           size_t work_bytes, fl_plan_info *out)
    fl_status fl_lstm_forward(const fl_lstm *lstm, const fl_blas *blas,
                              const fl_run *run, void *work,
                              size_t work_bytes)
    ctypedef enum fl_layer_kind:
        FL_LAYER_GRU
        FL_LAYER_SIMPLE

    ctypedef struct fl_layer_desc:
        fl_layer_kind kind
        int input_size
        int units
        fl_activation activation
        fl_activation recurrent_activation
        int reset_after

    ctypedef struct fl_layer:
        pass

    fl_status fl_layer_create(const fl_layer_desc *desc, const float *kernel,
                              const float *recurrent_kernel, const float *bias,
                              const float *recurrent_bias, fl_layer **out)
    void fl_layer_free(fl_layer *layer)
    fl_status fl_layer_get_desc(const fl_layer *layer, fl_layer_desc *out)
    fl_status fl_layer_workspace_size(const fl_layer *layer, const fl_run *run,
                                      size_t *out_bytes)
    fl_status fl_layer_forward(const fl_layer *layer, const fl_blas *blas,
                               const fl_run *run, void *work,
                               size_t work_bytes)
    ctypedef enum fl_stage_kind:
        FL_STAGE_MASKING
        FL_STAGE_LSTM
        FL_STAGE_LAYER
        FL_STAGE_DENSE
        FL_STAGE_ACTIVATION
        FL_STAGE_SOFTMAX
        FL_STAGE_AFFINE
        FL_STAGE_EMBEDDING
        FL_STAGE_LAYER_NORM

    ctypedef struct fl_stage:
        fl_stage_kind kind
        int in_size
        int out_size
        float mask_value
        int keep_nan
        const fl_lstm *lstm
        const fl_layer *layer
        fl_run *run
        void *work
        size_t work_bytes
        int masked
        int sequence_output
        const float *kernel
        const float *bias
        fl_activation activation
        const float *scale
        const float *shift
        int vocab
        int mask_zero
        float epsilon
        int rms_scaling

    fl_status fl_chain_workspace_size(const fl_stage *stages, int n_stages,
                                      int batch, size_t *out_bytes)
    fl_status fl_chain_step(const fl_stage *stages, int n_stages,
                            const fl_blas *blas, int batch, const float *x,
                            float *out, void *work, size_t work_bytes,
                            int *failed_stage)
    fl_status fl_pool_create(int threads, fl_pool **out)
    void fl_pool_free(fl_pool *pool)
    int fl_amx_available()
    int fl_woven_available()
    const char *fl_status_message(fl_status status)
    fl_status fl_activation_apply(fl_activation act, float *v, size_t n)
