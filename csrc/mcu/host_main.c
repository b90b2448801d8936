/* Host check of an exported model (tests/deploy/mcu_tools.py): uint8 images on stdin
 * (PREFIX_INPUT_SIZE bytes each), per image a line "P class logit logit ..." with the logits as
 * float32 bit patterns in hex (exact).  With -DLOWBIT_TRACE=lowbit_trace, every binary layer's
 * integer accumulators too: "T layer oc oy ox acc". */
#include <stdio.h>
#include <string.h>

#include "lowbit_model.h"

#ifdef LOWBIT_TRACE
void lowbit_trace(int layer, int oc, int oy, int ox, int32_t acc)
{
    printf("T %d %d %d %d %ld\n", layer, oc, oy, ox, (long)acc);
}
#endif

int main(void)
{
    static uint8_t img[LOWBIT_INPUT_SIZE];
    static float out[LOWBIT_OUTPUT_SIZE];
    while (fread(img, 1, sizeof img, stdin) == sizeof img) {
        int k, cls = lowbit_predict(img, out);
        printf("P %d", cls);
        for (k = 0; k < LOWBIT_OUTPUT_SIZE; ++k) {
            uint32_t u;
            memcpy(&u, &out[k], 4);
            printf(" %08lx", (unsigned long)u);
        }
        printf("\n");
    }
    return 0;
}
