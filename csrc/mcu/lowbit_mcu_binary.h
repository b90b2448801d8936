/* lowbit_mcu_binary.h: the binary (XNOR-popcount) conv and dense kernels of `lowbit export-c`;
 * included by lowbit_mcu.h (layouts and maths there). */
#ifndef LOWBIT_MCU_BINARY_H
#define LOWBIT_MCU_BINARY_H

/* Binary conv2d: +-1 input (c, h, w) in the padded bits layout (wpp words per pixel), +-1
 * weights [oc][kh][kw][wpp] packed the same way (unused bits 0).
 *   acc(o, oy, ox) = sum over the taps (ky, kx) and channels of x * w
 *                  = n - 2 * popcount(X xor W),   n = c per counted tap,
 * where a tap outside the input reads pad_value: -1 (all bits 0: counted), +1 (the c valid
 * bits 1: counted) or 0 (adds nothing: skipped, n does not grow) -- exactly the accumulator
 * of lowbit.runtime.bitconv (its pad corrections included).
 * Output: bits (thr != NULL: folded sign(BN), optionally max-pooled, written at pixel
 * (py, px) bit (py * out_w + px) * out_ps + o) or float (oc, oh, ow) through the stage. */
typedef struct {
    int32_t id;                 /* layer number, for LOWBIT_TRACE */
    int32_t c, h, w, wpp;       /* input channels, size, words per pixel */
    int32_t oc, kh, kw, sh, sw, ph, pw, pad_value;
    int32_t pkh, pkw, psh, psw; /* fused max pool of the bits (1 1 1 1: none) */
    int32_t out_h, out_w;           /* output size (after the pool) */
    const uint32_t *wt;
    const int32_t *thr;         /* NULL: float output */
    const uint8_t *flip;
    int32_t out_ps, out_words;  /* bits output: pixel stride, words to clear */
    lb_stage_t st;              /* float output */
} lb_bconv_t;

static inline int32_t lb_bconv_acc(const lb_bconv_t *p, const uint32_t *x, int32_t o, int32_t oy,
                                   int32_t ox)
{
    const uint32_t *wp = p->wt + o * p->kh * p->kw * p->wpp;
    /* the valid bits of the last word of a pixel: what a +1 pad tap holds there */
    uint32_t last = (p->c & 31) ? ((1u << (p->c & 31)) - 1u) : 0xFFFFFFFFu;
    int32_t n = 0, pop = 0, ky, kx, k, iy0 = oy * p->sh - p->ph, ix0 = ox * p->sw - p->pw;
    int32_t row = p->kw * p->wpp; /* words of one window row, contiguous in x and in w */
    if (iy0 >= 0 && ix0 >= 0 && iy0 + p->kh <= p->h && ix0 + p->kw <= p->w) {
        /* the window lies inside the input: kh runs of kw * wpp words */
        const uint32_t *xr = x + (iy0 * p->w + ix0) * p->wpp;
        for (ky = 0; ky < p->kh; ++ky, xr += p->w * p->wpp, wp += row)
            for (k = 0; k < row; ++k)
                pop += lb_popcount32(xr[k] ^ wp[k]);
        return p->kh * p->kw * p->c - 2 * pop;
    }
    for (ky = 0; ky < p->kh; ++ky) {
        int32_t iy = iy0 + ky;
        for (kx = 0; kx < p->kw; ++kx, wp += p->wpp) {
            int32_t ix = ix0 + kx;
            if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) {
                const uint32_t *xp = x + (iy * p->w + ix) * p->wpp;
                for (k = 0; k < p->wpp; ++k)
                    pop += lb_popcount32(xp[k] ^ wp[k]);
            } else if (p->pad_value == 0) {
                continue;
            } else {
                for (k = 0; k < p->wpp; ++k) {
                    uint32_t a = p->pad_value < 0 ? 0u : (k == p->wpp - 1 ? last : 0xFFFFFFFFu);
                    pop += lb_popcount32(a ^ wp[k]);
                }
            }
            n += p->c;
        }
    }
    return n - 2 * pop;
}

/* bit of a folded sign(BN): acc >= thr (increasing channel) or acc <= thr (flip). */
static inline int lb_thr_bit(int32_t acc, int32_t thr, int flip)
{
    return flip ? acc <= thr : acc >= thr;
}

static inline void lb_bconv(const lb_bconv_t *p, const uint32_t *x, void *y)
{
    int32_t o, py, px, qy, qx;
    if (!p->thr) {
        float *yf = (float *)y;
        for (o = 0; o < p->oc; ++o)
            for (py = 0; py < p->out_h; ++py)
                for (px = 0; px < p->out_w; ++px) {
                    int32_t acc = lb_bconv_acc(p, x, o, py, px);
                    LB_TRACE(p->id, o, py, px, acc);
                    yf[(o * p->out_h + py) * p->out_w + px] = lb_stage(&p->st, (float)acc, o);
                }
        return;
    }
    lb_zero_words((uint32_t *)y, p->out_words);
    for (py = 0; py < p->out_h; ++py)
        for (px = 0; px < p->out_w; ++px)
            for (o = 0; o < p->oc; ++o) {
                int flip = p->flip[o] != 0;
                int bit = flip; /* AND starts at 1, OR at 0 */
                for (qy = 0; qy < p->pkh; ++qy)
                    for (qx = 0; qx < p->pkw; ++qx) {
                        int32_t oy = py * p->psh + qy, ox = px * p->psw + qx;
                        int32_t acc = lb_bconv_acc(p, x, o, oy, ox);
                        int b = lb_thr_bit(acc, p->thr[o], flip);
                        LB_TRACE(p->id, o, oy, ox, acc);
                        bit = flip ? (bit & b) : (bit | b);
                    }
                if (bit)
                    lb_set_bit((uint32_t *)y, (py * p->out_w + px) * p->out_ps + o);
            }
}

/* Binary dense: the whole +-1 input as nwords words in any bits layout, each weight row packed
 * in the same layout (gaps 0 in both): acc(o) = nbits - 2 * popcount(X xor W_o), nbits the
 * real input values.  Output: bit o (thr != NULL) or float y[o] through the stage. */
typedef struct {
    int32_t id, nbits, nwords, n_out;
    const uint32_t *wt; /* [n_out][nwords] */
    const int32_t *thr; /* NULL: float output */
    const uint8_t *flip;
    lb_stage_t st;
} lb_bdense_t;

static inline void lb_bdense(const lb_bdense_t *p, const uint32_t *x, void *y)
{
    int32_t o, k;
    if (p->thr)
        lb_zero_words((uint32_t *)y, (p->n_out + 31) >> 5);
    for (o = 0; o < p->n_out; ++o) {
        const uint32_t *wr = p->wt + o * p->nwords;
        int32_t pop = 0, acc;
        for (k = 0; k < p->nwords; ++k)
            pop += lb_popcount32(x[k] ^ wr[k]);
        acc = p->nbits - 2 * pop;
        LB_TRACE(p->id, o, 0, 0, acc);
        if (!p->thr)
            ((float *)y)[o] = lb_stage(&p->st, (float)acc, o);
        else if (lb_thr_bit(acc, p->thr[o], p->flip[o] != 0))
            lb_set_bit((uint32_t *)y, o);
    }
}

/* index of the largest of n floats (the first one on ties, as numpy's argmax) */
static inline int lb_argmax(const float *y, int32_t n)
{
    int32_t i, best = 0;
    for (i = 1; i < n; ++i)
        if (y[i] > y[best])
            best = i;
    return (int)best;
}

#endif /* LOWBIT_MCU_BINARY_H */
