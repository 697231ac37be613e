"""The generated CSR header: every register of ``CSR`` at its index, the ID value, the width of
the error code, and the text compiles as C++."""

import subprocess

from vitaccel.hw.interfaces import CSR
from vitaccel.isa import ErrorCode
from vitaccel.sim.csr_header import HEADER_NAME, csr_header, csr_registers


def test_registers_are_the_csr_map_in_index_order():
    registers = csr_registers()
    assert list(registers.values()) == sorted(registers.values()) == list(range(len(registers)))
    assert registers["CTRL"] == CSR.CTRL and registers["ID"] == CSR.ID and "ID_VALUE" not in registers


def test_header_compiles_with_the_python_values(tmp_path):
    """A C++ file of static_asserts, one per value, compiles against the header (g++ builds the
    Verilator models too)."""
    (tmp_path / HEADER_NAME).write_text(csr_header())
    checks = [f"static_assert({name} == {index}, \"{name}\");" for name, index in csr_registers().items()]
    checks += [f"static_assert(kIdValue == {CSR.ID_VALUE}u, \"ID\");",
               f"static_assert(kErrorBits == {ErrorCode.as_shape().width}, \"error width\");"]
    (tmp_path / "check.cpp").write_text(f'#include "{HEADER_NAME}"\n' + "\n".join(checks) + "\n")
    result = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "check.cpp"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
