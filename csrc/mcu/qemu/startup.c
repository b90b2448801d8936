/* Minimal Cortex-M4 start-up for the qemu test firmware: the vector table (initial stack
 * pointer, reset and fault handlers), .data copied from flash, .bss zeroed, the FPU enabled,
 * then main(); semihosting (ARM's BKPT 0xAB interface, qemu -semihosting-config enable=on)
 * for output and exit.  No OS, no newlib start-up files (-nostartfiles). */
#include <stdint.h>

extern uint32_t _etext, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

/* semihosting call: r0 = operation, r1 = argument; BKPT 0xAB traps to the debugger (qemu). */
int semihost(int op, const void *arg)
{
    register int r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihost_puts(const char *s) { semihost(0x04, s); } /* SYS_WRITE0 */

/* SYS_EXIT: ADP_Stopped_ApplicationExit (qemu exits 0) or RunTimeErrorUnknown (exits 1) */
void semihost_exit(int ok)
{
    semihost(0x18, (const void *)(uintptr_t)(ok ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

void Reset_Handler(void)
{
    uint32_t *src = &_etext, *dst;
    /* CPACR: full access to the FPU coprocessors CP10, CP11 before any float instruction */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
    for (dst = &_sdata; dst < &_edata;)
        *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    semihost_exit(main() == 0);
}

void Fault_Handler(void)
{
    semihost_puts("FAULT\n");
    semihost_exit(0);
}

/* word 0: the initial stack pointer; then the exception handlers (reset, NMI, hard fault,
 * memory management, bus, usage faults, 4 reserved, SVC, debug monitor, reserved, PendSV,
 * SysTick) */
typedef void (*handler_t)(void);
typedef union {
    const void *sp;
    handler_t fn;
} vector_t;

__attribute__((section(".vectors"), used)) static const vector_t vectors[16] = {
    {.sp = &_estack},     {.fn = Reset_Handler}, {.fn = Fault_Handler}, {.fn = Fault_Handler},
    {.fn = Fault_Handler}, {.fn = Fault_Handler}, {.fn = Fault_Handler}, {.sp = 0},
    {.sp = 0},            {.sp = 0},             {.sp = 0},             {.fn = Fault_Handler},
    {.fn = Fault_Handler}, {.sp = 0},            {.fn = Fault_Handler}, {.fn = Fault_Handler},
};
