# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   set up .venv, make sure Fashion-MNIST is present, run `lowbit demo`
#   make test   the same set-up, then the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.lowbit-installed
SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc -type f -not -path 'csrc/mcu/*' 2>/dev/null)

.PHONY: demo test setup data simde clean

demo: setup data
	$(VENV)/bin/lowbit demo

test: setup data simde
	$(VENV)/bin/python -m pytest -q

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 (CPU) first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): $(PY) $(SOURCES)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "scikit-build-core>=0.10" "nanobind>=2.0" cmake ninja
	$(PIP) install -q --no-build-isolation -e '.[all]'
	touch $@

data:
	@scripts/ensure-data.sh

simde:
	@scripts/ensure-simde.sh

clean:
	rm -rf build $(VENV) runs

# Deployment checks (docs/deploy.md).  cross-test: the bitwise kernels (portable + NEON) and
# lowbit-run cross-compiled for aarch64 and run under qemu-aarch64, outputs identical to the
# x86 runner.  Debian packages: g++-aarch64-linux-gnu qemu-user nlohmann-json3-dev libeigen3-dev.
.PHONY: cross-test
CROSS_CXX ?= aarch64-linux-gnu-g++
QEMU_A64 ?= qemu-aarch64 -L /usr/aarch64-linux-gnu
cross-test:
	@mkdir -p build/cross
	$(CROSS_CXX) -std=c++17 -O2 -ffp-contract=off -Icsrc tests/deploy/kernel_test.cpp -o build/cross/kernel_test -static -lpthread
	$(QEMU_A64) build/cross/kernel_test
	@mkdir -p build/cross/inc && ln -sfn /usr/include/eigen3/Eigen build/cross/inc/Eigen && ln -sfn /usr/include/nlohmann build/cross/inc/nlohmann
	$(CROSS_CXX) -std=c++17 -O2 -ffp-contract=off -ffunction-sections -fdata-sections -Icsrc -Ibuild/cross/inc \
	  csrc/runner/main.cpp csrc/runner/api.cpp csrc/graph/fgemm_portable.cpp \
	  -o build/cross/lowbit-run -static -lpthread -Wl,--gc-sections -s
	$(MAKE) -s setup
	$(VENV)/bin/python tests/deploy/cross_check.py build/cross/lowbit-run "$(QEMU_A64)"

# cross-count: guest instructions per inference of the aarch64 lowbit-run under qemu, portable
# vs neon, with the top functions of each (docs/results.md; tests/deploy/count_instructions.py,
# a qemu TCG plugin tests/deploy/insn_plugin.c built with the host gcc).  Needs the .venv (it
# exports the models); it does not rebuild it.
.PHONY: cross-count
cross-count:
	@mkdir -p build/cross/inc && ln -sfn /usr/include/eigen3/Eigen build/cross/inc/Eigen && ln -sfn /usr/include/nlohmann build/cross/inc/nlohmann
	$(CROSS_CXX) -std=c++17 -O2 -ffp-contract=off -ffunction-sections -fdata-sections -Icsrc -Ibuild/cross/inc \
	  csrc/runner/main.cpp csrc/runner/api.cpp csrc/graph/fgemm_portable.cpp \
	  -o build/cross/lowbit-run.sym -static -lpthread -Wl,--gc-sections
	gcc -O2 -shared -fPIC -o build/cross/insn_plugin.so tests/deploy/insn_plugin.c
	$(VENV)/bin/python tests/deploy/count_instructions.py --exe build/cross/lowbit-run.sym \
	  --plugin build/cross/insn_plugin.so --qemu "$(QEMU_A64)" --profile 8 --groups

# mcu-test: `lowbit export-c` (docs/deploy.md) of bnn-lenet5 built with arm-none-eabi-gcc + newlib
# for a Cortex-M4F linked into 128 KiB flash / 32 KiB RAM, run under qemu-system-arm (MPS2 AN386,
# semihosting, -icount): predictions equal to the Python runtime's, logits equal to the host
# build's bit for bit, binary accumulators equal on the host; prints flash, RAM, stack and
# instructions per inference.  MCU_MODEL=file.lbm checks that file instead of a random-init one.
# Uses the venv of `make setup`.  Debian packages: gcc-arm-none-eabi libnewlib-arm-none-eabi
# qemu-system-arm.
.PHONY: mcu-test
mcu-test:
	$(PY) tests/deploy/mcu_check.py $(MCU_MODEL)
	$(PY) -m pytest -q tests/deploy/test_mcu.py
