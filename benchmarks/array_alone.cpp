// The systolic array alone under Verilator: the yardstick the full core's simulation speed is measured
// against (benchmarks/array_alone.py builds and runs it; benchmarks/deit_tiny.py prints the ratio).
//
//   array_alone CYCLES [SEED]
//
// Clocks the array the way sim/harness.cpp clocks the core (inputs set, eval with the clock low,
// eval with it high: two evals per cycle) with the work of a matmul stream: an input row every
// cycle, a weight row loaded every cycle and a new tile (a_first) every `rows` rows, seeded
// pseudo-random data. Every valid output row is folded into a checksum so no logic is dead.
// Prints one JSON line: {"cycles", "wall_s", "cycles_per_s", "checksum"}.

#include "Varray_alone.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace {

uint64_t next(uint64_t& s) {  // splitmix64
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
void randomize(T& port, uint64_t& s) { port = static_cast<T>(next(s)); }
template <std::size_t N>
void randomize(VlWide<N>& port, uint64_t& s) {
    for (std::size_t i = 0; i < N; ++i) port[i] = static_cast<uint32_t>(next(s));
}

template <typename T>
uint64_t fold(const T& port) { return static_cast<uint64_t>(port); }
template <std::size_t N>
uint64_t fold(const VlWide<N>& port) {
    uint64_t h = 0;
    for (std::size_t i = 0; i < N; ++i) h = h * 0x100000001B3ull ^ port[i];
    return h;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: array_alone CYCLES [SEED]\n");
        return 2;
    }
    char* end = nullptr;
    uint64_t cycles = std::strtoull(argv[1], &end, 0);
    if (!*argv[1] || *end || cycles == 0) {
        std::fprintf(stderr, "array_alone: CYCLES must be a positive integer, not %s\n", argv[1]);
        return 2;
    }
    uint64_t seed = argc == 3 ? std::strtoull(argv[2], nullptr, 0) : 1;
    const unsigned rows = ARRAY_ROWS;

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Varray_alone>(ctx.get());
    uint64_t checksum = 0;
    auto start = std::chrono::steady_clock::now();
    for (uint64_t c = 0; c < cycles + 2; ++c) {
        Varray_alone& t = *top;
        t.rst = c < 2;
        randomize(t.a_row, seed);
        randomize(t.w_row, seed);
        t.a_valid = 1;
        t.a_first = c % rows == 0;
        t.w_en = 1;
        t.w_index = c % rows;
        t.w_transpose = 0;
        t.clk = 0;
        t.eval();
        if (t.out_valid) checksum = checksum * 31 + fold(t.out_row);
        t.clk = 1;
        t.eval();
    }
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    top->final();
    std::printf("{\"cycles\": %llu, \"wall_s\": %.6f, \"cycles_per_s\": %.1f, \"checksum\": \"%016llx\"}\n",
                (unsigned long long)(cycles + 2), wall, (cycles + 2) / wall, (unsigned long long)checksum);
    return 0;
}
