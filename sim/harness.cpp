// Full-system Verilator harness of vitaccel_core (sim/verilator.py builds and drives it).
//
// The external memory is a byte image in this process behind the DRAM model of sim/dram.h (an AXI4
// slave with a profile's latency, bandwidth, turnaround and write latency, random stalls when asked,
// and protocol checks): the program and the tensors are loaded once, the core runs to `done` with no
// Python in the loop, and the final image is written back. The harness is the AXI4-Lite master of
// the CSRs: reset (aresetn low), ID check, PROG_ADDR, CTRL, and after `done` the counters.
//
//   harness --image IN --out OUT [--prog-addr A] [--seed S] [--latency MIN MAX] [--rate NUM DEN]
//           [--turnaround T] [--write-latency LW] [--max-bursts Q] [--stall P] [--max-cycles N]
//           [--trace FILE.vcd|FILE.fst] [--trace-from C] [--trace-to C] [--trace-instructions FILE.csv]
//           [--trace-engines FILE.csv]
//
// Memory (sim/dram.h, docs/architecture.md "External memory"): a read burst's first beat comes from
// its AR handshake + L on, L uniform in [MIN, MAX] (default 1 1); beats pace at NUM/DEN bytes per
// cycle (default one beat per cycle); T cycles turn the data bus around; B comes LW cycles after the
// last W beat; at most Q bursts in flight per direction (default 16); with probability P per cycle
// (from --seed) the memory stalls every channel. An illegal access is a harness error, and so is a
// cycle in which the core's `memory_collision` output is high (hw/memories.py).
//
// --trace writes a waveform of every signal: VCD from a build made with --trace, FST from one made
// with --trace-fst (VM_TRACE_FST; Verilator's FST writer needs the lz4 and zlib headers and libraries).
// --trace-from/--trace-to dump only the cycles [C_from, C_to) counted as CYCLES counts (the origin of
// --trace-instructions); the waveform's time is then 2 C (a cycle's falling half at 2 C, its rising
// edge at 2 C + 1). Without them the whole run is dumped, reset included, at time 2 n for the
// harness's n-th clock.
// --trace-instructions writes one CSV line "pc,start,end" per instruction the controller fetched:
// the cycles [start, end) (counted from the start write, as CYCLES) in which CSR PC held that address.
// It reads PC over AXI4-Lite every cycle (back-to-back reads: the R data of a cycle is PC of the
// cycle before), which leaves the core's run untouched.
// --trace-engines writes one CSV line "engine,start,end" per interval in which an engine's bit of the
// core's `engines_busy` output was 1 (bit k: hw/controller.py's Engine of value k + 1): the cycles
// [start, end), counted as --trace-instructions counts them, in the order they began.
//
// Prints one JSON line on stdout:
//   {"result": "done"|"timeout"|"harness_error", "cycles", "instret", "error", "status", "pc",
//    "sim_cycles", "bytes_read", "bytes_written", "wall_s", "message"}
// and exits 0 (done), 3 (timeout: --max-cycles cycles after the start without `done`), 2 (harness
// error) or 1 (bad arguments or files). The image is written for done and timeout. bytes_read and
// bytes_written count the data beats the core moved over AXI4 (program fetch included).

#include "Vvitaccel_core.h"
#include "verilated.h"
#include "dram.h"
#include "vitaccel_csr.h"  // the CSR map: written into the build directory by sim/csr_header.py
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using Waveform = VerilatedFstC;
#elif VM_TRACE
#include "verilated_vcd_c.h"
using Waveform = VerilatedVcdC;
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the memory model copies bus words as little-endian host integers"
#endif

#ifndef VITACCEL_BUS_BYTES
#error "define VITACCEL_BUS_BYTES (sim/verilator.py does)"
#endif

namespace {

constexpr std::size_t kBusBytes = VITACCEL_BUS_BYTES;

// Bus words travel as Verilator port types: CData/SData/IData/QData up to 64 bits, VlWide beyond.
template <typename T>
void put_word(T& port, const uint8_t* src) {
    static_assert(sizeof(T) == kBusBytes, "bus port width differs from VITACCEL_BUS_BYTES");
    T value;
    std::memcpy(&value, src, sizeof(T));
    port = value;
}
template <std::size_t N>
void put_word(VlWide<N>& port, const uint8_t* src) {
    static_assert(N * 4 == kBusBytes, "bus port width differs from VITACCEL_BUS_BYTES");
    for (std::size_t i = 0; i < N; ++i) {
        uint32_t word;
        std::memcpy(&word, src + 4 * i, 4);
        port[i] = word;
    }
}
template <typename T>
void get_word(const T& port, uint8_t* dst) {
    T value = port;
    std::memcpy(dst, &value, sizeof(T));
}
template <std::size_t N>
void get_word(const VlWide<N>& port, uint8_t* dst) {
    for (std::size_t i = 0; i < N; ++i) {
        uint32_t word = port[i];
        std::memcpy(dst + 4 * i, &word, 4);
    }
}

struct Options {
    std::string image_path, out_path, trace_path, instr_path, engines_path;
    uint64_t prog_addr = 0, max_cycles = 100000000;
    // The waveform's window in CYCLES' count, [trace_from, trace_to); windowed when either is given.
    uint64_t trace_from = 0, trace_to = UINT64_MAX;
    bool windowed = false;
    vitaccel::DramParams dram;
};

struct Stats {
    uint64_t cycles = 0, instret = 0, error = 0, status = 0, pc = 0, sim_cycles = 0, bytes_read = 0,
             bytes_written = 0;
    double wall_s = 0.0;
};

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) { out += ' '; continue; }
        out += c;
    }
    return out;
}

void report(const char* result, const Stats& st, const std::string& message) {
    std::printf("{\"result\": \"%s\", \"cycles\": %llu, \"instret\": %llu, \"error\": %llu, \"status\": %llu, "
                "\"pc\": %llu, \"sim_cycles\": %llu, \"bytes_read\": %llu, \"bytes_written\": %llu, "
                "\"wall_s\": %.6f, \"message\": \"%s\"}\n",
                result, (unsigned long long)st.cycles, (unsigned long long)st.instret,
                (unsigned long long)st.error, (unsigned long long)st.status, (unsigned long long)st.pc,
                (unsigned long long)st.sim_cycles, (unsigned long long)st.bytes_read,
                (unsigned long long)st.bytes_written, st.wall_s, json_escape(message).c_str());
    std::fflush(stdout);
}

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr, "harness: %s\nusage: harness --image IN --out OUT [--prog-addr A] [--seed S] "
                 "[--latency MIN MAX] [--rate NUM DEN] [--turnaround T] [--write-latency LW] [--max-bursts Q] "
                 "[--stall P] [--max-cycles N] [--trace FILE.vcd|FILE.fst] [--trace-from C] [--trace-to C] "
                 "[--trace-instructions FILE.csv] [--trace-engines FILE.csv]\n", why.c_str());
    std::exit(1);
}

uint64_t parse_uint(const char* s, const char* flag) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 0);
    if (!*s || *end) usage(std::string("bad value for ") + flag + ": " + s);
    return v;
}

Options parse(int argc, char** argv) {
    Options o;
    vitaccel::DramParams& d = o.dram;
    d.bus_bytes = kBusBytes;
    d.num = kBusBytes;
    d.den = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto need = [&](int n) {
            if (i + n >= argc) usage(a + " needs " + std::to_string(n) + " value(s)");
        };
        auto uint = [&]() { return parse_uint(argv[++i], a.c_str()); };
        if (a == "--image") { need(1); o.image_path = argv[++i]; }
        else if (a == "--out") { need(1); o.out_path = argv[++i]; }
        else if (a == "--prog-addr") { need(1); o.prog_addr = uint(); }
        else if (a == "--seed") { need(1); d.seed = uint(); }
        else if (a == "--max-cycles") { need(1); o.max_cycles = uint(); }
        else if (a == "--trace") { need(1); o.trace_path = argv[++i]; }
        else if (a == "--trace-from") { need(1); o.trace_from = uint(); o.windowed = true; }
        else if (a == "--trace-to") { need(1); o.trace_to = uint(); o.windowed = true; }
        else if (a == "--trace-instructions") { need(1); o.instr_path = argv[++i]; }
        else if (a == "--trace-engines") { need(1); o.engines_path = argv[++i]; }
        else if (a == "--latency") { need(2); d.latency = uint(); d.latency_max = uint(); }
        else if (a == "--rate") { need(2); d.num = uint(); d.den = uint(); }
        else if (a == "--turnaround") { need(1); d.turnaround = uint(); }
        else if (a == "--write-latency") { need(1); d.write_latency = uint(); }
        else if (a == "--max-bursts") { need(1); d.max_bursts = uint(); }
        else if (a == "--stall") {
            need(1);
            char* end = nullptr;
            d.stall = std::strtod(argv[++i], &end);
            if (*end) usage("bad value for --stall");
        } else usage("unknown argument " + a);
    }
    if (o.image_path.empty() || o.out_path.empty()) usage("--image and --out are required");
#if !VM_TRACE
    if (!o.trace_path.empty()) usage("--trace needs a harness built with --trace or --trace-fst");
#endif
    if (o.windowed && o.trace_path.empty()) usage("--trace-from and --trace-to need --trace");
    if (o.trace_from >= o.trace_to) usage("--trace-from must be below --trace-to");
    std::string bad = d.check();
    if (!bad.empty()) usage(bad);
    return o;
}

// Each engine's busy intervals, from the core's `engines_busy` output sampled once per cycle
// (--trace-engines).
class EngineLog {
  public:
    void sample(uint64_t cycle, unsigned bits) {
        unsigned changed = bits ^ bits_;
        for (unsigned k = 0; changed >> k; ++k) {
            if (!((changed >> k) & 1)) continue;
            if ((bits >> k) & 1) since_[k] = cycle;
            else spans_.push_back({since_[k], cycle, k});
        }
        bits_ = bits;
    }

    // Writes the intervals in CYCLES' count (harness cycle `origin` is 0), those still open ending
    // at harness cycle `now`, ordered by their start.
    bool write(const std::string& path, uint64_t origin, uint64_t now) {
        for (unsigned k = 0; bits_ >> k; ++k)
            if ((bits_ >> k) & 1) spans_.push_back({since_[k], now, k});
        bits_ = 0;
        std::stable_sort(spans_.begin(), spans_.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
        std::ofstream out(path);
        out << "engine,start,end\n";
        for (const Span& s : spans_) out << s.engine << ',' << s.start - origin << ',' << s.end - origin << '\n';
        out.close();
        return static_cast<bool>(out);
    }

  private:
    struct Span {
        uint64_t start, end;
        unsigned engine;
    };
    unsigned bits_ = 0;
    uint64_t since_[32] = {};
    std::vector<Span> spans_;
};

// The AXI4-Lite master's side of the CSR port in one cycle.
struct LiteMaster {
    bool awvalid = false, wvalid = false, bready = false, arvalid = false, rready = false;
    uint32_t awaddr = 0, wdata = 0, araddr = 0;
};

// What the CSR port did in the last cycle.
struct LiteEvents {
    bool aw = false, w = false, b = false, ar = false, r = false;
    uint32_t rdata = 0;
};

class System {
  public:
    System(const Options& o, std::vector<uint8_t> image) : opt_(o), dram_(o.dram, std::move(image)) {
        ctx_.reset(new VerilatedContext);
#if VM_TRACE
        if (!o.trace_path.empty()) ctx_->traceEverOn(true);
#endif
        top_.reset(new Vvitaccel_core{ctx_.get()});
#if VM_TRACE
        if (!o.trace_path.empty()) {
            wave_.reset(new Waveform);
            if (o.windowed) wave_from_ = UINT64_MAX;  // nothing before the start (window())
            top_->trace(wave_.get(), 99);
            wave_->open(o.trace_path.c_str());
        }
#endif
    }

    ~System() {
        top_->final();
#if VM_TRACE
        if (wave_) wave_->close();
#endif
    }

    // One clock cycle: the memory's and the CSR master's outputs for this cycle, the handshakes, the
    // rising edge. Returns false after a harness error (message in error()).
    bool cycle() {
        Vvitaccel_core& t = *top_;
        const vitaccel::DramOutputs& m = dram_.begin();
        t.m_axi_arready = m.arready;
        t.m_axi_awready = m.awready;
        t.m_axi_wready = m.wready;
        t.m_axi_rvalid = m.rvalid;
        t.m_axi_rlast = m.rlast;
        t.m_axi_rresp = 0;
        if (m.rvalid) put_word(t.m_axi_rdata, dram_.rdata());
        t.m_axi_bvalid = m.bvalid;
        t.m_axi_bresp = 0;
        t.s_axi_awvalid = lite_.awvalid;
        t.s_axi_awaddr = lite_.awaddr;
        t.s_axi_awprot = 0;
        t.s_axi_wvalid = lite_.wvalid;
        t.s_axi_wdata = lite_.wdata;
        t.s_axi_wstrb = 0xF;
        t.s_axi_bready = lite_.bready;
        t.s_axi_arvalid = lite_.arvalid;
        t.s_axi_araddr = lite_.araddr;
        t.s_axi_arprot = 0;
        t.s_axi_rready = lite_.rready;
        t.aclk = 0;
#ifdef VITACCEL_GATED_ENGINES
        // hw/core.py, gated_engine_clocks: the enabled engines sample their inputs now, when
        // everything has settled, and take their rising edge after the core's.
        t.engine_clocks = 0;
        t.engine_samples = engine_enables_;
#endif
        t.eval();
        dump(2 * now_);
        if (engines_) engines_->sample(now_, t.engines_busy);
        if (t.memory_collision) {
            // hw/memories.py: the engines never read and write one row of SPAD, ACC or PARAM in the
            // same cycle; the board's block RAMs would return undefined data where this model
            // returns the old row.
            error_ = "harness cycle " + std::to_string(now_) + ": a core memory (SPAD, ACC or PARAM) read and "
                     "wrote the same row in one cycle, undefined on a board (hw/memories.py)";
            return false;
        }

        vitaccel::DramInputs in;
        in.arvalid = t.m_axi_arvalid;
        in.araddr = t.m_axi_araddr;
        in.arlen = t.m_axi_arlen;
        in.arsize = t.m_axi_arsize;
        in.arburst = t.m_axi_arburst;
        in.awvalid = t.m_axi_awvalid;
        in.awaddr = t.m_axi_awaddr;
        in.awlen = t.m_axi_awlen;
        in.awsize = t.m_axi_awsize;
        in.awburst = t.m_axi_awburst;
        in.wvalid = t.m_axi_wvalid;
        in.wlast = t.m_axi_wlast;
        in.wstrb_full = static_cast<uint64_t>(t.m_axi_wstrb) == kFullStrobe;
        in.rready = t.m_axi_rready;
        in.bready = t.m_axi_bready;
        if (in.wvalid) get_word(t.m_axi_wdata, wdata_);
        events_.aw = lite_.awvalid && t.s_axi_awready;
        events_.w = lite_.wvalid && t.s_axi_wready;
        events_.b = lite_.bready && t.s_axi_bvalid;
        events_.ar = lite_.arvalid && t.s_axi_arready;
        events_.r = lite_.rready && t.s_axi_rvalid;
        events_.rdata = t.s_axi_rdata;
        bool ok = dram_.end(in, wdata_);

        t.aclk = 1;
#ifdef VITACCEL_GATED_ENGINES
        t.engine_samples = 0;
#endif
        t.eval();
#ifdef VITACCEL_GATED_ENGINES
        t.engine_clocks = engine_enables_;
        t.eval();
        engine_enables_ = t.engine_enables;  // for the next cycle
#endif
        dump(2 * now_ + 1);
        ++now_;
        return ok;
    }

    bool reset() {
        top_->aresetn = 0;
        for (int i = 0; i < 4; ++i)
            if (!cycle()) return false;
        top_->aresetn = 1;
        return true;
    }

    // CSR `index` written with `value` over AXI4-Lite; `at` is the cycle the core applies the write:
    // the cycle after the W handshake (hw.axi.AxiLiteCsr registers a write and applies it the next
    // cycle). False after a harness error or when the port never answers.
    bool csr_write(uint32_t index, uint32_t value, uint64_t* at = nullptr) {
        lite_.awvalid = lite_.wvalid = true;
        lite_.awaddr = 4 * index;
        lite_.wdata = value;
        lite_.bready = true;
        for (int i = 0; i < kCsrTimeout && (lite_.awvalid || lite_.wvalid || !events_.b); ++i) {
            if (!cycle()) return false;
            if (events_.aw) lite_.awvalid = false;
            if (events_.w) {
                lite_.wvalid = false;
                if (at) *at = now_;
            }
            if (!lite_.awvalid && !lite_.wvalid && events_.b) {
                lite_.bready = false;
                return true;
            }
        }
        error_ = "the CSR port did not answer a write to register " + std::to_string(index);
        return false;
    }

    // CSR `index` read over AXI4-Lite into `value`.
    bool csr_read(uint32_t index, uint32_t* value) {
        lite_.arvalid = lite_.rready = true;
        lite_.araddr = 4 * index;
        for (int i = 0; i < kCsrTimeout; ++i) {
            if (!cycle()) return false;
            if (events_.ar) lite_.arvalid = false;
            if (!lite_.arvalid && events_.r) {
                lite_.rready = false;
                *value = events_.rdata;
                return true;
            }
        }
        error_ = "the CSR port did not answer a read of register " + std::to_string(index);
        return false;
    }

    // Back-to-back reads of CSR `index` from now on: in every cycle the port answers, events().rdata
    // is the register's value in the cycle before. stop_reading() ends them (the last R is taken).
    void keep_reading(uint32_t index) {
        lite_.arvalid = lite_.rready = true;
        lite_.araddr = 4 * index;
    }

    bool stop_reading() {
        lite_.arvalid = false;
        for (int i = 0; i < kCsrTimeout; ++i) {
            if (!cycle()) return false;
            if (!top_->s_axi_rvalid) {
                lite_.rready = false;
                return true;
            }
        }
        error_ = "the CSR port kept answering reads";
        return false;
    }

    // The waveform's cycles [from, to) of CYCLES' count now that its origin, harness cycle
    // `origin`, is known; their time is counted from it.
    void window(uint64_t origin, uint64_t from, uint64_t to) {
        wave_origin_ = origin;
        wave_from_ = origin + from;
        wave_to_ = to > UINT64_MAX - origin ? UINT64_MAX : origin + to;
    }

    void log_engines(EngineLog* log) { engines_ = log; }

    bool done() const { return top_->done; }
    uint64_t now() const { return now_; }
    const LiteEvents& events() const { return events_; }
    const std::string& error() const { return error_.empty() ? dram_.error() : error_; }
    const vitaccel::Dram& dram() const { return dram_; }

  private:
    static constexpr int kCsrTimeout = 64;
    static constexpr uint64_t kFullStrobe = (uint64_t{1} << kBusBytes) - 1;

    void dump(uint64_t time) {
#if VM_TRACE
        if (wave_ && now_ >= wave_from_ && now_ < wave_to_) wave_->dump(time - 2 * wave_origin_);
#else
        (void)time;
#endif
    }

    Options opt_;
    vitaccel::Dram dram_;
    uint64_t now_ = 0;
#ifdef VITACCEL_GATED_ENGINES
    uint32_t engine_enables_ = 0x7F;  // all seven engines (hw.controller.Engine) clocked at first
#endif
    LiteMaster lite_;
    LiteEvents events_;
    uint8_t wdata_[kBusBytes] = {};
    std::string error_;
    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vvitaccel_core> top_;
#if VM_TRACE
    std::unique_ptr<Waveform> wave_;
#endif
    uint64_t wave_origin_ = 0, wave_from_ = 0, wave_to_ = UINT64_MAX;
    EngineLog* engines_ = nullptr;
};

// Runs to `done` (or max_cycles after the start) writing the instruction trace. PC is read every
// cycle, one cycle late, so the run goes on until PC of the cycle `done` is seen in has been read.
// CYCLES counts the cycles from the one after the CTRL write (`start`) to the one before `done` is
// seen: an instruction whose address PC first holds in cycle n starts at n - start - 2 (the
// cycle, counted as CYCLES counts, in which the controller moved on to it), the first at 0, and
// the last ends at CYCLES - 1, as the harness has always written them.
bool run_traced(System& sys, uint64_t start, uint64_t max_cycles, const std::string& path) {
    std::ofstream trace(path);
    trace << "pc,start,end\n";
    auto at = [&](uint64_t cycle) { return cycle - start - 2; };
    sys.keep_reading(PC);
    bool have = false;
    uint32_t pc = 0;
    uint64_t since = 0, done_cycle = 0;
    bool done = false;
    while (!done || sys.now() - 2 < done_cycle) {
        if (!done && sys.now() - start - 1 >= max_cycles) break;
        if (!sys.cycle()) return false;
        if (!done && sys.done()) {
            done = true;
            done_cycle = sys.now();
        }
        if (!sys.events().r) continue;
        uint64_t cycle = sys.now() - 2;  // the cycle whose PC the R data of this cycle holds
        if (!have) {  // PC two cycles after the start: the first instruction is still being fetched
            pc = sys.events().rdata;
            have = true;
        } else if (sys.events().rdata != pc) {
            trace << pc << ',' << since << ',' << at(cycle) << '\n';
            pc = sys.events().rdata;
            since = at(cycle);
        }
    }
    trace << pc << ',' << since << ',' << at(done ? done_cycle : sys.now()) << '\n';
    return sys.stop_reading();
}

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse(argc, argv);
    std::ifstream in(opt.image_path, std::ios::binary);
    if (!in) usage("cannot read " + opt.image_path);
    std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

    auto start_time = std::chrono::steady_clock::now();
    System sys(opt, std::move(image));
    Stats st;
    auto fail = [&](const std::string& message) {
        st.sim_cycles = sys.now();
        st.bytes_read = sys.dram().bytes_read();
        st.bytes_written = sys.dram().bytes_written();
        report("harness_error", st, message);
        return 2;
    };
    uint32_t id = 0;
    if (!sys.reset() || !sys.csr_read(ID, &id)) return fail(sys.error());
    if (id != kIdValue) {
        char buf[80];
        std::snprintf(buf, sizeof buf, "CSR ID does not read 0x%08x: not a vitaccel core", kIdValue);
        return fail(buf);
    }
    uint64_t start = 0;
    if (!sys.csr_write(PROG_ADDR, static_cast<uint32_t>(opt.prog_addr)) || !sys.csr_write(CTRL, 1, &start))
        return fail(sys.error());

    // CYCLES counts from harness cycle start + 2 (run_traced).
    const uint64_t origin = start + 2;
    if (opt.windowed) sys.window(origin, opt.trace_from, opt.trace_to);
    EngineLog engines;
    if (!opt.engines_path.empty()) sys.log_engines(&engines);
    bool ok = true;
    if (opt.instr_path.empty()) {
        while (!sys.done() && sys.now() - start - 1 < opt.max_cycles) {
            if (!sys.cycle()) { ok = false; break; }
        }
    } else {
        ok = run_traced(sys, start, opt.max_cycles, opt.instr_path);
    }
    sys.log_engines(nullptr);
    if (!opt.engines_path.empty() && !engines.write(opt.engines_path, origin, sys.now()))
        usage("cannot write " + opt.engines_path);
    // After a memory protocol error the DRAM model idles: the counters still say where the core was.
    std::string error = ok ? "" : sys.error();
    uint32_t lo = 0, hi = 0, instret = 0, status = 0, pc = 0;
    bool read = sys.csr_read(CYCLES_LO, &lo) && sys.csr_read(CYCLES_HI, &hi) && sys.csr_read(INSTRET, &instret)
                && sys.csr_read(STATUS, &status) && sys.csr_read(PC, &pc);
    st.cycles = (static_cast<uint64_t>(hi) << 32) | lo;
    st.instret = instret;
    st.status = status;
    st.error = (status >> 8) & ((1u << kErrorBits) - 1);  // STATUS bits 15:8 (hw/controller.py)
    st.pc = pc;
    st.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
    if (!ok || !read) return fail(ok ? sys.error() : error);
    st.sim_cycles = sys.now();
    st.bytes_read = sys.dram().bytes_read();
    st.bytes_written = sys.dram().bytes_written();

    std::ofstream out(opt.out_path, std::ios::binary);
    const std::vector<uint8_t>& final_image = sys.dram().memory();
    out.write(reinterpret_cast<const char*>(final_image.data()), static_cast<std::streamsize>(final_image.size()));
    out.close();
    if (!out) {
        report("harness_error", st, "cannot write " + opt.out_path);
        return 2;
    }
    if (!sys.done()) {
        report("timeout", st, "no done after " + std::to_string(opt.max_cycles) + " cycles");
        return 3;
    }
    report("done", st, "");
    return 0;
}
