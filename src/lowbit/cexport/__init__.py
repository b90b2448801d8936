"""``lowbit export-c``: a model file as portable C99 for microcontrollers (numpy only, no torch).

    from lowbit.cexport import export_c
    report = export_c("model.lbm", "out/")   # out/lowbit_model.{h,c}, lowbit_mcu*.h

writes ``PREFIX_model.h`` (the API: ``int PREFIX_predict(const uint8_t *input, float
*output)``, sizes as macros), ``PREFIX_model.c`` (weights as ``static const`` arrays, a static
activation arena sized by a liveness plan, the function) and the kernel headers of
csrc/mcu.  No heap, no OS, no libc calls.  docs/deploy.md ("Microcontrollers") describes the
use; ``lower`` what is supported; anything else is refused with ``Unsupported`` naming the op.
"""
from lowbit.cexport.export import Unsupported, export_c, kernel_headers  # noqa: F401

__all__ = ["export_c", "Unsupported", "kernel_headers"]
