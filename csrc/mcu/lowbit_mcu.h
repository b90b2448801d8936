/* lowbit_mcu.h: the portable C99 kernels that `lowbit export-c` code calls (docs/deploy.md).
 *
 * No heap, no OS, no libc calls: every kernel reads its weights from const memory (flash) and
 * writes into a caller-given buffer (the exported model's static arena).  Compile with
 * -ffp-contract=off (no fused multiply-adds): the float stages below are written as the
 * separately rounded float32 operations that the Python runtime performs, so that they give
 * the same bits.
 *
 * Two kinds of values (N = 1 image):
 *   float  float32, CHW (or (F,)), as torch / the Python runtime hold them;
 *   bits   +-1 activations, bit 1 = +1.  Pixel p (= y * W + x), channel c is bit number
 *          p * pstride + c of a little-endian uint32 word array: bit i is bit (i & 31) of
 *          word i >> 5.  pstride = 32 * wpp ("padded": every pixel starts a new word, the
 *          layout of the conv kernels) or pstride = C ("stream": no gaps, what a dense layer
 *          reads; 800 bits of bnn-lenet5's fc1 input are 25 words, not 4 * 4 * 2).  Unused
 *          bits are 0, in activations and in the weights packed the same way.
 *
 * The binary maths (XNOR-popcount).  For a, w in {-1, +1} held as bits A, W (1 = +1):
 *   a * w = +1 if A == W else -1 = 1 - 2 * (A xor W),
 * so over n pairs   sum a_i w_i = n - 2 * popcount(A xor W),
 * and bits that are 0 in both operands (layout gaps, channel padding) add nothing to the
 * popcount; only n counts the real pairs.  The integer accumulator equals the Python
 * runtime's (lowbit.runtime.bitconv) exactly.
 *
 * Folded sign(BatchNorm(acc)) (lowbit.codec.fold.fold_threshold): per channel an int32 thr
 * and a flip flag, bit = flip ? acc <= thr : acc >= thr.  A max pool of the +-1 outputs that
 * follows it pools the accumulator before the BN (monotone per channel): OR of the bits for
 * increasing channels (flip 0), AND for decreasing ones (flip 1).
 */
#ifndef LOWBIT_MCU_H
#define LOWBIT_MCU_H

#include <math.h> /* fmaf: one instruction (VFMA.F32) on a Cortex-M4F */
#include <stddef.h>
#include <stdint.h>

#ifdef LOWBIT_STEP_HOOK
/* Profiling: called after step k of PREFIX_predict (the qemu firmware reads a counter). */
void LOWBIT_STEP_HOOK(int step);
#define LB_STEP(k) LOWBIT_STEP_HOOK(k)
#else
#define LB_STEP(k) ((void)0)
#endif

#ifdef LOWBIT_TRACE
/* Host tests: every binary accumulator (layer id, out channel, out y, out x, acc). */
void LOWBIT_TRACE(int layer, int oc, int oy, int ox, int32_t acc);
#define LB_TRACE(l, o, y, x, a) LOWBIT_TRACE(l, o, y, x, a)
#else
#define LB_TRACE(l, o, y, x, a) ((void)0)
#endif

/* popcount of a 32-bit word, SWAR: Cortex-M has no popcount instruction.  Sums of 2, 4, 8
 * bit fields in place; the multiply adds the four byte counts into the top byte. */
static inline int lb_popcount32(uint32_t v)
{
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    return (int)((v * 0x01010101u) >> 24);
}

static inline int lb_get_bit(const uint32_t *b, int32_t i) { return (int)((b[i >> 5] >> (i & 31)) & 1u); }
static inline void lb_set_bit(uint32_t *b, int32_t i) { b[i >> 5] |= 1u << (i & 31); }

static inline void lb_zero_words(uint32_t *b, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        b[i] = 0;
}

/* round half to even of a float32 (numpy's np.round, C's rintf in the default mode), without
 * libm: for |x| < 2^23, x + 2^23 rounds to an integer in the current (nearest-even) mode and
 * subtracting 2^23 again is exact; |x| >= 2^23 is an integer already. */
static inline float lb_rint(float x)
{
    const float big = 8388608.0f;
    if (x >= big || x <= -big || x != x)
        return x;
    return x >= 0.0f ? (x + big) - big : (x - big) + big;
}

/* The float output stage of a layer (lowbit.runtime.ops.QLayer, torch's Conv2d / Linear bias):
 * y = ((round?(acc) * sw) * sx) + bias, each a float32 rounding, in that order. */
typedef struct {
    const float *sw;  /* NULL, 1 value (sw_n = 1) or one per output channel */
    int32_t sw_n;
    int32_t has_sx;
    float sx;
    const float *bias; /* NULL or one per output channel */
    int32_t round_acc; /* integer_acc of a float-kind quantized layer */
} lb_stage_t;

static inline float lb_stage(const lb_stage_t *s, float acc, int32_t o)
{
    float y = s->round_acc ? lb_rint(acc) : acc;
    if (s->sw)
        y = y * s->sw[s->sw_n == 1 ? 0 : o];
    if (s->has_sx)
        y = y * s->sx;
    if (s->bias)
        y = y + s->bias[o];
    return y;
}

/* ---- input ---------------------------------------------------------------------------------- */

/* uint8 CHW pixels -> float32 CHW through the stored normalisation: table[c][u8] =
 * float32((u8 / scale - mean_c) / std_c) computed in float64 at export, the Python runtime's
 * table bit for bit.  tables: one 256-entry table per channel (ntab = 1: shared). */
static inline void lb_input_u8(const uint8_t *in, const float *tables, int32_t ntab, int32_t c,
                        int32_t hw, float *y)
{
    int32_t ch, i;
    for (ch = 0; ch < c; ++ch) {
        const float *t = tables + (ntab == 1 ? 0 : 256 * ch);
        for (i = 0; i < hw; ++i)
            y[ch * hw + i] = t[in[ch * hw + i]];
    }
}

/* ---- float layers --------------------------------------------------------------------------- */

/* conv2d (groups 1) of x (c, h, w) with weights [oc][c][kh][kw], taps outside the input reading
 * `pad`, then the stage, then an optional max pool (pkh x pkw, stride psh x psw, no padding;
 * 1 x 1 / 1: none) fused in: each pooled output computes the conv outputs of its window.
 *   acc(o, oy, ox) = sum_{c, ky, kx} w[o][c][ky][kx] * x[c][oy*sh - ph + ky][ox*sw - pw + kx]
 * The sum runs over (ky, kx, c) with one fused multiply-add per term (fmaf: a single
 * rounding), the order and rounding of the Python runtime's im2col GEMM on a BLAS that
 * accumulates each output in one FMA chain (OpenBLAS), so that float first layers mostly give
 * the same bits; weights are laid out [oc][kh][kw][c] to match.
 * y: float (oc, out_h, out_w), or, with thr_t, the bits of a folded sign(BatchNorm) of those
 * values (bit = s_o * (v - t_o) >= 0, lb_sign_bits) at (py * out_w + px) * out_ps + o: a
 * float first layer then never stores its float output (bnn-lenet5: 576 bytes, not 11 KB). */
typedef struct {
    int32_t c, h, w, oc, kh, kw, sh, sw, ph, pw;
    float pad;
    int32_t pkh, pkw, psh, psw, out_h, out_w;
    const float *wt;
    lb_stage_t st;
    const float *thr_t, *thr_s; /* NULL: float output */
    int32_t out_ps, out_words;
} lb_fconv_t;

static inline float lb_fconv_at(const lb_fconv_t *p, const float *x, int32_t o, int32_t oy,
                               int32_t ox)
{
    const float *wk = p->wt + o * p->kh * p->kw * p->c;
    float acc = 0.0f;
    int32_t ci, ky, kx, iy0 = oy * p->sh - p->ph, ix0 = ox * p->sw - p->pw, hw = p->h * p->w;
    if (iy0 >= 0 && ix0 >= 0 && iy0 + p->kh <= p->h && ix0 + p->kw <= p->w) {
        /* the window lies inside the input: no bounds tests (the same order of the sum) */
        const float *xr = x + iy0 * p->w + ix0;
        if (p->c == 1) { /* a first layer on grey images: no channel loop */
            for (ky = 0; ky < p->kh; ++ky, xr += p->w)
                for (kx = 0; kx < p->kw; ++kx)
                    acc = fmaf(*wk++, xr[kx], acc);
            return lb_stage(&p->st, acc, o);
        }
        for (ky = 0; ky < p->kh; ++ky, xr += p->w)
            for (kx = 0; kx < p->kw; ++kx)
                for (ci = 0; ci < p->c; ++ci)
                    acc = fmaf(*wk++, xr[ci * hw + kx], acc);
        return lb_stage(&p->st, acc, o);
    }
    for (ky = 0; ky < p->kh; ++ky) {
        int32_t iy = iy0 + ky;
        for (kx = 0; kx < p->kw; ++kx) {
            int32_t ix = ix0 + kx, in = iy >= 0 && iy < p->h && ix >= 0 && ix < p->w;
            for (ci = 0; ci < p->c; ++ci)
                acc = fmaf(*wk++, in ? x[ci * hw + iy * p->w + ix] : p->pad, acc);
        }
    }
    return lb_stage(&p->st, acc, o);
}

static inline void lb_fconv(const lb_fconv_t *p, const float *x, void *y)
{
    int32_t o, py, px, qy, qx;
    if (p->thr_t)
        lb_zero_words((uint32_t *)y, p->out_words);
    for (o = 0; o < p->oc; ++o)
        for (py = 0; py < p->out_h; ++py)
            for (px = 0; px < p->out_w; ++px) {
                float m = 0.0f;
                for (qy = 0; qy < p->pkh; ++qy)
                    for (qx = 0; qx < p->pkw; ++qx) {
                        float v = lb_fconv_at(p, x, o, py * p->psh + qy, px * p->psw + qx);
                        if ((qy == 0 && qx == 0) || v > m)
                            m = v;
                    }
                if (!p->thr_t) {
                    ((float *)y)[(o * p->out_h + py) * p->out_w + px] = m;
                } else {
                    float z = m - p->thr_t[o];
                    if (p->thr_s[o] < 0.0f)
                        z = -z;
                    if (z >= 0.0f)
                        lb_set_bit((uint32_t *)y, (py * p->out_w + px) * p->out_ps + o);
                }
            }
}

/* dense: y[o] = stage(sum_i w[o][i] * x[i]), w [n_out][n_in]. */
typedef struct {
    int32_t n_in, n_out;
    const float *wt;
    lb_stage_t st;
} lb_fdense_t;

static inline void lb_fdense(const lb_fdense_t *p, const float *x, float *y)
{
    int32_t o, i;
    for (o = 0; o < p->n_out; ++o) {
        const float *wr = p->wt + o * p->n_in;
        float acc = 0.0f;
        for (i = 0; i < p->n_in; ++i)
            acc = acc + wr[i] * x[i];
        y[o] = lb_stage(&p->st, acc, o);
    }
}

/* dense with +-1 input held as bits: x_i * w = +w or -w exactly, so
 *   acc = sum_i (bit_i ? w[o][i] : -w[o][i]).
 * The weight columns are in the bits' memory order (pixel p, channel c -> column p * c + c_),
 * laid out so at export; the bit of column j is at p * pstride + c_. */
typedef struct {
    int32_t npix, c, pstride, n_out;
    const float *wt; /* [n_out][npix * c] */
    lb_stage_t st;
} lb_fdense_bits_t;

static inline void lb_fdense_bits(const lb_fdense_bits_t *p, const uint32_t *x, float *y)
{
    int32_t o, px, ci, n_in = p->npix * p->c;
    for (o = 0; o < p->n_out; ++o) {
        const float *wr = p->wt + o * n_in;
        float acc = 0.0f;
        for (px = 0; px < p->npix; ++px)
            for (ci = 0; ci < p->c; ++ci) {
                float w = wr[px * p->c + ci];
                acc = acc + (lb_get_bit(x, px * p->pstride + ci) ? w : -w);
            }
        y[o] = lb_stage(&p->st, acc, o);
    }
}

/* max pool (no padding) of x (c, h, w) -> (c, oh, ow); the running max starts at the first tap. */
static inline void lb_maxpool_f32(const float *x, int32_t c, int32_t h, int32_t w, int32_t kh, int32_t kw,
                           int32_t sh, int32_t sw, int32_t oh, int32_t ow, float *y)
{
    int32_t ci, oy, ox, ky, kx;
    for (ci = 0; ci < c; ++ci)
        for (oy = 0; oy < oh; ++oy)
            for (ox = 0; ox < ow; ++ox) {
                float m = x[(ci * h + oy * sh) * w + ox * sw];
                for (ky = 0; ky < kh; ++ky)
                    for (kx = 0; kx < kw; ++kx) {
                        float v = x[(ci * h + oy * sh + ky) * w + ox * sw + kx];
                        m = v > m ? v : m;
                    }
                y[(ci * oh + oy) * ow + ox] = m;
            }
}

/* torch eval BatchNorm as lowbit.codec.fold.bn_affine computes it: a, b are float32 and
 * y = float32(double(x) * a + b) (the product is exact in double, one double rounding of the
 * sum, then one to float32; soft-float on a Cortex-M4, 10 values for a LeNet head). */
static inline void lb_batchnorm(const float *x, int32_t c, int32_t hw, const float *a, const float *b,
                         float *y)
{
    int32_t ci, i;
    for (ci = 0; ci < c; ++ci)
        for (i = 0; i < hw; ++i)
            y[ci * hw + i] = (float)((double)x[ci * hw + i] * (double)a[ci] + (double)b[ci]);
}

static inline void lb_relu(const float *x, int32_t n, float *y)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static inline void lb_hardtanh(const float *x, int32_t n, float lo, float hi, float *y)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        y[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
}

/* y = a + b (float32; the Python runtime adds a graph op's inputs left to right). */
static inline void lb_add_f32(const float *a, const float *b, int32_t n, float *y)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        y[i] = a[i] + b[i];
}

/* ---- float <-> bits ------------------------------------------------------------------------- */

/* Bits of float32 x (c, hw): sign(x) with sign(0) = +1, or sign(BatchNorm(x)) folded into float
 * thresholds (lowbit.codec.fold.fold_float_threshold): bit = s_c * (x - t_c) >= 0, s = +-1
 * (multiplying by -1 is an exact negation; t = +-inf gives a constant bit).  t == NULL: x >= 0. */
static inline void lb_sign_bits(const float *x, int32_t c, int32_t hw, const float *t, const float *s,
                         int32_t pstride, uint32_t *y, int32_t nwords)
{
    int32_t ci, i;
    lb_zero_words(y, nwords);
    for (ci = 0; ci < c; ++ci)
        for (i = 0; i < hw; ++i) {
            float z = x[ci * hw + i];
            if (t) {
                z = z - t[ci];
                if (s[ci] < 0.0f)
                    z = -z;
            }
            if (z >= 0.0f)
                lb_set_bit(y, i * pstride + ci);
        }
}

/* +-1 float32 (c, hw) of bits (the Python runtime's Bits.to_float). */
static inline void lb_bits_to_f32(const uint32_t *x, int32_t c, int32_t hw, int32_t pstride, float *y)
{
    int32_t ci, i;
    for (ci = 0; ci < c; ++ci)
        for (i = 0; i < hw; ++i)
            y[ci * hw + i] = lb_get_bit(x, i * pstride + ci) ? 1.0f : -1.0f;
}

/* max pool of +-1 bits = OR over the window (no padding); any layouts in and out. */
static inline void lb_maxpool_bits(const uint32_t *x, int32_t c, int32_t h, int32_t w, int32_t in_ps,
                            int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t oh, int32_t ow,
                            int32_t out_ps, uint32_t *y, int32_t nwords)
{
    int32_t ci, oy, ox, ky, kx;
    (void)h; /* (oh - 1) * sh + kh <= h: checked at export */
    lb_zero_words(y, nwords);
    for (oy = 0; oy < oh; ++oy)
        for (ox = 0; ox < ow; ++ox)
            for (ci = 0; ci < c; ++ci) {
                int on = 0;
                for (ky = 0; ky < kh && !on; ++ky)
                    for (kx = 0; kx < kw && !on; ++kx)
                        on = lb_get_bit(x, ((oy * sh + ky) * w + ox * sw + kx) * in_ps + ci);
                if (on)
                    lb_set_bit(y, (oy * ow + ox) * out_ps + ci);
            }
}

#include "lowbit_mcu_binary.h"

#endif /* LOWBIT_MCU_H */
