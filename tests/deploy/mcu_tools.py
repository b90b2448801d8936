"""Build and run `lowbit export-c` output: on the host (gcc, with the binary accumulators traced)
and as Cortex-M4 firmware under qemu-system-arm (MPS2 AN386, semihosting).  Used by
tests/deploy/test_mcu.py and tests/deploy/mcu_check.py (`make mcu-test`)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MCU = ROOT / "csrc" / "mcu"
ARM_CC = os.environ.get("ARM_CC", "arm-none-eabi-gcc")
QEMU_ARM = os.environ.get("QEMU_ARM", "qemu-system-arm")
HOST_CC = os.environ.get("CC", "gcc")
CFLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-pedantic", "-Werror"]
# Cortex-M4F, hard float ABI (single-precision FPU; the doubles of BatchNorm are soft-float)
M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
INSN_PER_TICK = 40   # qemu -icount shift=0: 1 insn = 1 ns; the MPS2 FPGAIO counter runs at 25 MHz


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in (ARM_CC, QEMU_ARM, "arm-none-eabi-size"))


def host_build(export_dir: Path, exe: Path, trace: bool = True) -> Path:
    cmd = [HOST_CC, *CFLAGS, f"-I{export_dir}", str(export_dir / "lowbit_model.c"),
           str(MCU / "host_main.c"), "-o", str(exe), "-lm"]
    if trace:
        cmd.insert(1, "-DLOWBIT_TRACE=lowbit_trace")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return exe


def _parse(lines, n_out: int, traced: list[str]):
    preds, logits, traces, cur = [], [], [], {}
    for line in lines:
        f = line.split()
        if not f:
            continue
        if f[0] == "T":
            layer, oc, oy, ox, acc = map(int, f[1:6])
            cur.setdefault(traced[layer], {})[(oc, oy, ox)] = acc
        elif f[0] == "P":
            preds.append(int(f[1]))
            logits.append(np.array([int(h, 16) for h in f[2:2 + n_out]], np.uint32)
                          .view(np.float32))
            traces.append(cur)
            cur = {}
    return np.array(preds), np.array(logits), traces


def host_run(exe: Path, images: np.ndarray, n_out: int, traced: list[str]):
    """(predictions, logits (N, n_out) float32, per image {layer: {(oc, oy, ox): acc}})."""
    r = subprocess.run([str(exe)], input=np.ascontiguousarray(images, np.uint8).tobytes(),
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return _parse(r.stdout.decode().splitlines(), n_out, traced)


def trace_array(trace: dict, shape) -> np.ndarray:
    """One layer's traced accumulators as an array of the Python runtime's record shape
    (OC, OH, OW) or (OC,) (one image); untraced entries -2^31."""
    out = np.full(shape, -(1 << 31), np.int64)
    for (oc, oy, ox), acc in trace.items():
        out[(oc, oy, ox) if len(shape) == 3 else (oc,)] = acc
    return out


# ---- Cortex-M4 firmware under qemu ---------------------------------------------------------

def images_header(images: np.ndarray, path: Path) -> None:
    flat = np.ascontiguousarray(images, np.uint8).reshape(len(images), -1)
    rows = ",\n".join("    {" + ",".join(str(int(v)) for v in img) + "}" for img in flat)
    path.write_text(f"/* test images (generated) */\n#define N_IMAGES {len(flat)}\n"
                    f"static const uint8_t images[N_IMAGES][{flat.shape[1]}] = {{\n{rows}\n}};\n")


def firmware_build(export_dir: Path, images: np.ndarray, out: Path, flash_kb: int = 128,
                   ram_kb: int = 32, stack_kb: int = 4, opt: str = "-O2") -> Path:
    """The ELF of the exported model + csrc/mcu/qemu (startup, linker script, semihosting
    main) for a Cortex-M4 with ``flash_kb`` / ``ram_kb`` of memory: the link fails if the
    model does not fit."""
    out.mkdir(parents=True, exist_ok=True)
    images_header(images, out / "test_images.h")
    elf = out / "mcu.elf"
    q = MCU / "qemu"
    cmd = [ARM_CC, *M4, *[f for f in CFLAGS if f != "-O2"], opt, "-ffunction-sections",
           "-DLOWBIT_STEP_HOOK=lowbit_step",
           "-fdata-sections", f"-I{export_dir}", f"-I{out}",
           str(export_dir / "lowbit_model.c"), str(q / "main.c"), str(q / "startup.c"),
           "-nostartfiles", "--specs=nano.specs", "-T", str(q / "mps2_an386.ld"),
           f"-Wl,--defsym=FLASH_KB={flash_kb}", f"-Wl,--defsym=RAM_KB={ram_kb}",
           f"-Wl,--defsym=STACK_KB={stack_kb}", "-Wl,--gc-sections",
           f"-Wl,-Map={out / 'mcu.map'}", "-o", str(elf), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-4000:]
    return elf


def qemu_run(elf: Path, n_out: int, timeout: int = 600) -> dict:
    """Run the firmware; returns predictions, logits, per-image instruction counts, the stack
    bytes used (painted stack) and the raw output."""
    cmd = [QEMU_ARM, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
           "-kernel", str(elf)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "DONE" in text, f"qemu exit {r.returncode}:\n{text[-3000:]}"
    preds, logits, _ = _parse([l for l in text.splitlines() if l.startswith("P ")], n_out, [])
    insns = [int(m) * INSN_PER_TICK for m in re.findall(r"^I (\d+)", text, re.M)]
    stack = int(re.search(r"^STACK (\d+)", text, re.M).group(1))
    steps = [int(t) * INSN_PER_TICK for _, t in re.findall(r"^S (\d+) (\d+)", text, re.M)]
    return {"preds": preds, "logits": logits, "insns": insns, "steps": steps, "stack": stack,
            "text": text}


def elf_sizes(elf: Path) -> dict:
    """text / data / bss bytes (arm-none-eabi-size) and the symbols' sizes of interest."""
    r = subprocess.run(["arm-none-eabi-size", "-B", str(elf)], capture_output=True, text=True,
                       check=True)
    text, data, bss = map(int, r.stdout.splitlines()[1].split()[:3])
    nm = subprocess.run(["arm-none-eabi-nm", "-S", "--size-sort", str(elf)], capture_output=True,
                        text=True, check=True).stdout
    syms = {}
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = int(f[1], 16)
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "symbols": syms}
