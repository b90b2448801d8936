/* The qemu test firmware's main (tests/deploy/mcu_tools.py builds it with an exported model
 * and the generated test_images.h): for each image one lowbit_predict, then over semihosting
 *   P <class> <logit bits in hex>...     the output, float32 bit patterns (exact)
 *   I <ticks>                            the MPS2 FPGAIO COUNTER (25 MHz) across the call: run
 *                                        with qemu -icount shift=0 (1 instruction = 1 ns),
 *                                        ticks * 40 = instructions per inference
 *   S <step> <ticks>                     the same per step of the function (first image; the
 *                                        model compiled with -DLOWBIT_STEP_HOOK=lowbit_step)
 *   STACK <bytes>                        the deepest stack use (the stack painted first)
 *   DONE */
#include <stdint.h>
#include <string.h>

#include "lowbit_model.h"
#include "test_images.h"

void semihost_puts(const char *s);

#define FPGAIO_COUNTER (*(volatile uint32_t *)0x40028018u)
#define PAINT 0xA5A5A5A5u

extern uint32_t _sstack, _estack;

#define MAX_STEPS 64
static uint32_t step_ticks[MAX_STEPS];
static uint32_t step_t0;

void lowbit_step(int k)
{
    uint32_t t = FPGAIO_COUNTER;
    if (k < MAX_STEPS)
        step_ticks[k] = t - step_t0;
    step_t0 = t;
}

static char *put_u32(char *p, uint32_t v, int hex)
{
    char tmp[12];
    int n = 0;
    do {
        uint32_t d = hex ? (v & 15u) : (v % 10u);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v = hex ? v >> 4 : v / 10u;
    } while (v || (hex && n < 8));
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* fill the unused stack (below the current stack pointer, a margin kept) with PAINT */
static void paint_stack(void)
{
    uint32_t *p = &_sstack, *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    while (p < sp - 16)
        *p++ = PAINT;
}

static uint32_t stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == PAINT)
        ++p;
    return (uint32_t)((const char *)&_estack - (const char *)p);
}

int main(void)
{
    static float out[LOWBIT_OUTPUT_SIZE];
    static char line[16 + 9 * LOWBIT_OUTPUT_SIZE];
    int i, k;
    paint_stack();
    for (i = 0; i < N_IMAGES; ++i) {
        uint32_t t0 = FPGAIO_COUNTER, t1;
        int cls;
        step_t0 = t0;
        cls = lowbit_predict(images[i], out);
        char *p = line;
        t1 = FPGAIO_COUNTER;
        *p++ = 'P';
        *p++ = ' ';
        p = put_u32(p, (uint32_t)cls, 0);
        for (k = 0; k < LOWBIT_OUTPUT_SIZE; ++k) {
            uint32_t u;
            memcpy(&u, &out[k], 4);
            *p++ = ' ';
            p = put_u32(p, u, 1);
        }
        *p++ = '\n';
        *p = 0;
        semihost_puts(line);
        p = line;
        *p++ = 'I';
        *p++ = ' ';
        p = put_u32(p, t1 - t0, 0);
        *p++ = '\n';
        *p = 0;
        semihost_puts(line);
        for (k = 0; i == 0 && k < MAX_STEPS && step_ticks[k]; ++k) {
            p = line;
            *p++ = 'S';
            *p++ = ' ';
            p = put_u32(p, (uint32_t)k, 0);
            *p++ = ' ';
            p = put_u32(p, step_ticks[k], 0);
            *p++ = '\n';
            *p = 0;
            semihost_puts(line);
        }
    }
    {
        char *p = line;
        memcpy(p, "STACK ", 6);
        p = put_u32(p + 6, stack_used(), 0);
        memcpy(p, "\nDONE\n", 7);
        semihost_puts(line);
    }
    return 0;
}
