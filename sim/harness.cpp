// Full-system Verilator harness of vitaccel_core (sim/verilator.py builds and drives it).
//
// The external memory is a byte image in this process: the program and the tensors are loaded once,
// the core runs to `done` with no Python in the loop, and the final image is written back.
//
//   harness --image IN --out OUT [--prog-addr A] [--seed S] [--latency MIN MAX] [--cmd-stall P]
//           [--max-cycles N] [--trace FILE.vcd] [--trace-instructions FILE.csv]
//
// --trace writes a VCD waveform of every signal (only in a build made with --trace: VM_TRACE). VCD
// rather than FST: Verilator's FST writer needs liblz4's headers, which a fresh machine lacks.
// --trace-instructions writes one CSV line "pc,start,end" per instruction the controller fetched:
// the cycles [start, end) (counted from the start write, as CYCLES) in which CSR PC held that address.
//
// Memory model: a read command accepted in cycle t is answered from cycle t + L on, L uniform in
// [MIN, MAX] (MIN >= 1), in command order; `mem_cmd_ready` is low with probability P in each cycle.
// Both come from one seeded generator, so a run is reproducible. The response back-pressure is the
// core's (`mem_rsp_ready`). A write is performed when accepted. An access that is misaligned or
// reaches outside the image is a harness error.
//
// Prints one JSON line on stdout:
//   {"result": "done"|"timeout"|"harness_error", "cycles", "instret", "error", "status", "pc",
//    "sim_cycles", "wall_s", "message"}
// and exits 0 (done), 3 (timeout: --max-cycles cycles after the start without `done`), 2 (harness
// error) or 1 (bad arguments or files). The image is written for done and timeout.

#include "Vvitaccel_core.h"
#include "verilated.h"
#include "vitaccel_csr.h"  // the CSR map: written into the build directory by sim/csr_header.py
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
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

// splitmix64: small, fast, and the same sequence on every platform.
struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

struct Response {
    uint64_t due;  // first cycle in which it may be offered
    uint8_t data[kBusBytes];
};

struct Options {
    std::string image_path, out_path, trace_path, instr_path;
    uint64_t prog_addr = 0, seed = 0, max_cycles = 100000000;
    uint64_t lat_min = 1, lat_max = 1;
    double cmd_stall = 0.0;
};

struct Stats {
    uint64_t cycles = 0, instret = 0, error = 0, status = 0, pc = 0, sim_cycles = 0;
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
                "\"pc\": %llu, \"sim_cycles\": %llu, \"wall_s\": %.6f, \"message\": \"%s\"}\n",
                result, (unsigned long long)st.cycles, (unsigned long long)st.instret,
                (unsigned long long)st.error, (unsigned long long)st.status, (unsigned long long)st.pc,
                (unsigned long long)st.sim_cycles, st.wall_s, json_escape(message).c_str());
    std::fflush(stdout);
}

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr, "harness: %s\nusage: harness --image IN --out OUT [--prog-addr A] [--seed S] "
                 "[--latency MIN MAX] [--cmd-stall P] [--max-cycles N]\n", why.c_str());
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
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto need = [&](int n) {
            if (i + n >= argc) usage(a + " needs " + std::to_string(n) + " value(s)");
        };
        if (a == "--image") { need(1); o.image_path = argv[++i]; }
        else if (a == "--out") { need(1); o.out_path = argv[++i]; }
        else if (a == "--prog-addr") { need(1); o.prog_addr = parse_uint(argv[++i], "--prog-addr"); }
        else if (a == "--seed") { need(1); o.seed = parse_uint(argv[++i], "--seed"); }
        else if (a == "--max-cycles") { need(1); o.max_cycles = parse_uint(argv[++i], "--max-cycles"); }
        else if (a == "--trace") { need(1); o.trace_path = argv[++i]; }
        else if (a == "--trace-instructions") { need(1); o.instr_path = argv[++i]; }
        else if (a == "--latency") {
            need(2);
            o.lat_min = parse_uint(argv[++i], "--latency");
            o.lat_max = parse_uint(argv[++i], "--latency");
        } else if (a == "--cmd-stall") {
            need(1);
            char* end = nullptr;
            o.cmd_stall = std::strtod(argv[++i], &end);
            if (*end || !(o.cmd_stall >= 0.0 && o.cmd_stall < 1.0)) usage("--cmd-stall must be in [0, 1)");
        } else usage("unknown argument " + a);
    }
    if (o.image_path.empty() || o.out_path.empty()) usage("--image and --out are required");
#if !VM_TRACE
    if (!o.trace_path.empty()) usage("--trace needs a harness built with --trace");
#endif
    if (o.lat_min < 1 || o.lat_max < o.lat_min) usage("--latency needs 1 <= MIN <= MAX");
    return o;
}

class System {
  public:
    System(const Options& o, std::vector<uint8_t> image)
        : opt_(o), image_(std::move(image)), rng_{o.seed * 0x2545F4914F6CDD1Dull + 1} {
        // P(ready low) = stall: compare 32 random bits against a threshold.
        stall_threshold_ = static_cast<uint64_t>(o.cmd_stall * 4294967296.0);
        ctx_.reset(new VerilatedContext);
#if VM_TRACE
        if (!o.trace_path.empty()) ctx_->traceEverOn(true);
#endif
        top_.reset(new Vvitaccel_core{ctx_.get()});
#if VM_TRACE
        if (!o.trace_path.empty()) {
            wave_.reset(new VerilatedVcdC);
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

    // One clock cycle: the memory model's inputs for this cycle, the handshakes, the rising edge.
    // Returns false after a harness error (message in error_).
    bool cycle() {
        Vvitaccel_core& t = *top_;
        bool offer = !pending_.empty() && pending_.front().due <= now_;
        t.mem_cmd_ready = stall_threshold_ == 0 || (rng_.next() & 0xFFFFFFFFu) >= stall_threshold_;
        t.mem_rsp_valid = offer;
        if (offer) put_word(t.mem_rsp_data, pending_.front().data);
        t.clk = 0;
        t.eval();
        dump(2 * now_);
        if (t.mem_cmd_valid && t.mem_cmd_ready && !command()) return false;
        if (offer && t.mem_rsp_ready) pending_.pop_front();
        t.clk = 1;
        t.eval();
        dump(2 * now_ + 1);
        ++now_;
        return true;
    }

    void reset() {
        top_->rst = 1;
        for (int i = 0; i < 2; ++i) cycle();
        top_->rst = 0;
    }

    void csr_write(uint32_t addr, uint32_t value) {
        top_->csr_addr = addr;
        top_->csr_w_data = value;
        top_->csr_w_en = 1;
        cycle();
        top_->csr_w_en = 0;
    }

    uint32_t csr_read(uint32_t addr) {
        top_->csr_addr = addr;
        top_->eval();
        return top_->csr_r_data;
    }

    bool done() const { return top_->done; }
    uint64_t now() const { return now_; }
    const std::string& error() const { return error_; }
    const std::vector<uint8_t>& image() const { return image_; }

  private:
    void dump(uint64_t time) {
#if VM_TRACE
        if (wave_) wave_->dump(time);
#else
        (void)time;
#endif
    }

    bool command() {
        Vvitaccel_core& t = *top_;
        uint64_t addr = t.mem_cmd_addr;
        bool write = t.mem_cmd_write;
        if (addr % kBusBytes || addr + kBusBytes > image_.size()) {
            char buf[200];
            std::snprintf(buf, sizeof buf, "%s of %zu bytes at address 0x%llx in cycle %llu: %s (image of %zu bytes)",
                          write ? "write" : "read", kBusBytes, (unsigned long long)addr,
                          (unsigned long long)now_, addr % kBusBytes ? "misaligned" : "outside the image",
                          image_.size());
            error_ = buf;
            return false;
        }
        if (write) {
            get_word(t.mem_cmd_wdata, &image_[addr]);
        } else {
            uint64_t latency = opt_.lat_min;
            if (opt_.lat_max > opt_.lat_min) latency += rng_.next() % (opt_.lat_max - opt_.lat_min + 1);
            Response r;
            r.due = now_ + latency;
            std::memcpy(r.data, &image_[addr], kBusBytes);
            pending_.push_back(r);
        }
        return true;
    }

    Options opt_;
    std::vector<uint8_t> image_;
    Rng rng_;
    uint64_t stall_threshold_ = 0;
    uint64_t now_ = 0;
    std::deque<Response> pending_;
    std::string error_;
    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vvitaccel_core> top_;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> wave_;
#endif
};

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse(argc, argv);
    std::ifstream in(opt.image_path, std::ios::binary);
    if (!in) usage("cannot read " + opt.image_path);
    std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

    auto start = std::chrono::steady_clock::now();
    System sys(opt, std::move(image));
    Stats st;
    sys.reset();
    if (sys.csr_read(ID) != kIdValue) {
        char buf[80];
        std::snprintf(buf, sizeof buf, "CSR ID does not read 0x%08x: not a vitaccel core", kIdValue);
        report("harness_error", st, buf);
        return 2;
    }
    sys.csr_write(PROG_ADDR, static_cast<uint32_t>(opt.prog_addr));
    sys.csr_write(CTRL, 1);

    uint64_t first = sys.now();
    bool ok = true;
    if (opt.instr_path.empty()) {
        while (!sys.done() && sys.now() - first < opt.max_cycles) {
            if (!sys.cycle()) { ok = false; break; }
        }
    } else {
        // CSR reads are combinational: with the address held at PC, csr_r_data follows the
        // controller's PC every cycle without disturbing the run.
        std::ofstream trace(opt.instr_path);
        trace << "pc,start,end\n";
        uint32_t pc = sys.csr_read(PC);
        uint64_t since = 0;
        while (!sys.done() && sys.now() - first < opt.max_cycles) {
            if (!sys.cycle()) { ok = false; break; }
            uint32_t now_pc = sys.csr_read(PC);
            if (now_pc != pc) {
                trace << pc << ',' << since << ',' << (sys.now() - first - 1) << '\n';
                pc = now_pc;
                since = sys.now() - first - 1;
            }
        }
        trace << pc << ',' << since << ',' << (sys.now() - first - 1) << '\n';
    }
    uint32_t lo = sys.csr_read(CYCLES_LO), hi = sys.csr_read(CYCLES_HI);
    st.cycles = (static_cast<uint64_t>(hi) << 32) | lo;
    st.instret = sys.csr_read(INSTRET);
    st.status = sys.csr_read(STATUS);
    st.error = (st.status >> 8) & ((1u << kErrorBits) - 1);  // STATUS bits 15:8 (hw/controller.py)
    st.pc = sys.csr_read(PC);
    st.sim_cycles = sys.now();
    st.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (!ok) {
        report("harness_error", st, sys.error());
        return 2;
    }
    std::ofstream out(opt.out_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(sys.image().data()), static_cast<std::streamsize>(sys.image().size()));
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
