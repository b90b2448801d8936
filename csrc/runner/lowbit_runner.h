/* lowbit runner: a C API around the native graph executor (csrc/graph/executor.h) that loads
 * lowbit model files in C++ (csrc/runner/model.h, plan.h); no Python anywhere.
 *
 *   char err[512];
 *   lowbit_model* m = lowbit_load("model.lbm", 1, NULL, err, sizeof err);   // NULL: error in err
 *   float logits[10];
 *   lowbit_run_u8(m, pixels, 1, logits, err, sizeof err);   // pixels: n * C*H*W uint8, NCHW
 *   lowbit_free(m);
 *
 * Outputs come back in torch's layout (NCHW / (n, F)), float32, output 0 unless
 * lowbit_run_outputs is used.  Functions return 0 on success, nonzero with a message in err.
 * A model is not safe to run from two threads at once (one arena). */
#ifndef LOWBIT_RUNNER_H
#define LOWBIT_RUNNER_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct lowbit_model lowbit_model;

/* path: NULL = the best kernel path of this CPU ("portable", "neon", "avx2", "avx512"). */
lowbit_model* lowbit_load(const char* file, int threads, const char* path, char* err, size_t errlen);
void lowbit_free(lowbit_model* m);
/* The graph input per image: *c, *h, *w (C, H, W). */
void lowbit_input_shape(const lowbit_model* m, int64_t* c, int64_t* h, int64_t* w);
int lowbit_num_outputs(const lowbit_model* m);
/* Output k per image: its rank (1 or 3) and dims (torch layout, (F,) or (C, H, W)); returns
 * the number of floats per image. */
int64_t lowbit_output_shape(const lowbit_model* m, int k, int* rank, int64_t dims[3]);
const char* lowbit_kernel_path(const lowbit_model* m);
/* Bytes of the resident weights (kernel layouts) and of the activation arena for batch n. */
int64_t lowbit_weight_bytes(const lowbit_model* m);
int64_t lowbit_arena_bytes(lowbit_model* m, int64_t n);

/* n images of uint8 pixels (through the model's normalisation) -> output 0 (n * size). */
int lowbit_run_u8(lowbit_model* m, const uint8_t* x, int64_t n, float* out, char* err, size_t errlen);
/* n images already normalised as in training (float32, finite). */
int lowbit_run_f32(lowbit_model* m, const float* x, int64_t n, float* out, char* err, size_t errlen);
/* Every output: outs[k] has n * lowbit_output_shape(m, k) floats; x uint8 (u8 != 0) or float32. */
int lowbit_run_outputs(lowbit_model* m, const void* x, int u8, int64_t n, float** outs, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
