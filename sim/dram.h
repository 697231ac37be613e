// sim/dram.h: the DRAM model of the Verilator harness, an AXI4 slave (no IDs) stepped once per
// core clock cycle. It knows nothing of Verilator: sim/harness.cpp copies the core's ports into a
// DramInputs and back from a DramOutputs, and tests/sim/dram_driver.cpp drives it from a script.
//
// The rules are those of docs/architecture.md ("External memory") and of vitaccel/memory.py's
// DramTimeline, which a test proves equal to this model beat for beat (without stalls):
//
// - Data bus: `free_` in units of 1/num cycle. A beat (either direction) may move in cycle t only if
//   t*num >= free_ (+ turnaround*num when the previous beat went the other way); a beat moving in
//   cycle t sets free_ = max(free_, (t-1)*num + 1) + bus_bytes*den: a beat that moves in the first
//   cycle it may keeps the fraction of a cycle the bus owes (streaming paces exactly at num/den), one
//   after an idle bus starts the count afresh.
// - AR (AW) is ready while fewer than max_bursts read (write) bursts are accepted and unfinished; a
//   read burst is finished after its last beat, a write burst after its B handshake.
// - Reads are answered in order; the head burst's first beat is offered from accept + L on (L the
//   profile's latency, or drawn uniformly from [latency, latency_max] at the AR handshake), every
//   beat when the data bus allows; rlast on the last, rresp OKAY. Read data is memory at that cycle.
// - wready when a burst whose AW was accepted in an earlier cycle has beats to take and the data bus
//   allows (not in a cycle that offers a read beat). B OKAY from last beat + write_latency on, in
//   order, held until bready.
// - Random stalls (stall > 0): each cycle, with probability `stall`, arready, awready and wready are
//   low and rvalid and bvalid withheld. One draw per cycle in begin(), one per read burst at the AR
//   handshake when latency_max > latency, both from one splitmix64 generator seeded by `seed`.
//
// Protocol checks (end() returns false, error() says which, in which cycle, at which address; the
// model then stays idle, every ready and valid low, so that a harness can still read the core's
// CSRs to report where it stopped): an
// address not aligned to the bus, a burst crossing 4 KiB or leaving the memory, AxSIZE not the full
// width, AxBURST not INCR, a read accepted while a write is in flight or the reverse, wlast on the
// wrong beat, a W beat with a strobe bit clear, an AR/AW/W valid dropped or its payload changed
// before its handshake.

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace vitaccel {

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

struct DramParams {
    uint64_t bus_bytes = 4;
    uint64_t latency = 1, latency_max = 1;  // a read burst's L: uniform in [latency, latency_max]
    uint64_t num = 4, den = 1;              // bandwidth num/den bytes per cycle, at most bus_bytes
    uint64_t turnaround = 0;
    uint64_t write_latency = 1;
    uint64_t max_bursts = 16;               // per direction
    double stall = 0.0;                     // probability of a stalled cycle
    uint64_t seed = 0;
    uint64_t boundary = 4096;               // no burst crosses it (AXI4)

    // Empty when the parameters are usable, else why not.
    std::string check() const {
        if (bus_bytes == 0 || (bus_bytes & (bus_bytes - 1))) return "the bus width must be a power of two bytes";
        if (latency < 1 || latency_max < latency) return "the latency needs 1 <= MIN <= MAX";
        if (num == 0 || den == 0 || num > bus_bytes * den) return "the rate must be positive and at most one beat per cycle";
        if (write_latency < 1) return "the write latency must be at least 1";
        if (max_bursts < 1) return "max bursts must be at least 1";
        if (!(stall >= 0.0 && stall < 1.0)) return "the stall probability must be in [0, 1)";
        return "";
    }
};

// What the slave drives in a cycle: decided from its state alone, before the master's signals of
// the cycle are seen (none of them depends combinationally on the master).
struct DramOutputs {
    bool arready = false, awready = false, wready = false, rvalid = false, rlast = false, bvalid = false;
    uint64_t raddr = 0;  // address of the offered read beat
};

// What the master drives in a cycle, sampled before the clock edge.
struct DramInputs {
    bool arvalid = false;
    uint64_t araddr = 0;
    unsigned arlen = 0, arsize = 0, arburst = 0;
    bool awvalid = false;
    uint64_t awaddr = 0;
    unsigned awlen = 0, awsize = 0, awburst = 0;
    bool wvalid = false, wlast = false, wstrb_full = true;
    bool rready = false, bready = false;
};

class Dram {
  public:
    Dram(const DramParams& p, std::vector<uint8_t> memory)
        : p_(p), mem_(std::move(memory)), rng_{p.seed * 0x2545F4914F6CDD1Dull + 1} {
        // P(stall) = stall: compare 32 random bits against a threshold.
        stall_threshold_ = static_cast<uint64_t>(p.stall * 4294967296.0);
        size_log2_ = 0;
        while ((uint64_t{1} << size_log2_) < p.bus_bytes) ++size_log2_;
    }

    // The slave's outputs in the current cycle. Call once per cycle, then end().
    const DramOutputs& begin() {
        const uint64_t t = now_;
        bool stall = stall_threshold_ != 0 && (rng_.next() & 0xFFFFFFFFu) < stall_threshold_;
        out_ = DramOutputs{};
        if (stall || !error_.empty()) return out_;
        out_.arready = reads_.size() < p_.max_bursts;
        out_.awready = writes_.size() < p_.max_bursts;
        if (!reads_.empty()) {
            const Burst& h = reads_.front();
            if ((h.moved > 0 || t >= h.ready_at) && pace_ok(t, false)) {
                out_.rvalid = true;
                out_.raddr = h.addr + h.moved * p_.bus_bytes;
                out_.rlast = h.moved + 1 == h.beats;
            }
        }
        if (!out_.rvalid && w_next_ < writes_.size() && writes_[w_next_].accept < t && pace_ok(t, true))
            out_.wready = true;
        if (!writes_.empty() && writes_.front().moved == writes_.front().beats && writes_.front().ready_at <= t)
            out_.bvalid = true;
        return out_;
    }

    // The bytes of the offered read beat (valid while out().rvalid).
    const uint8_t* rdata() const { return &mem_[out_.raddr]; }

    // The cycle's handshakes; `wdata` is the W beat's bytes (read only on a W handshake). Returns
    // false in the cycle of a protocol error (error()); from then on the model is idle.
    bool end(const DramInputs& in, const uint8_t* wdata) {
        const uint64_t t = now_++;
        if (!error_.empty()) return true;
        if (out_.rvalid && in.rready) {
            Burst& h = reads_.front();
            move(t, false);
            bytes_read_ += p_.bus_bytes;
            if (++h.moved == h.beats) reads_.pop_front();
        }
        if (out_.wready && in.wvalid) {
            Burst& w = writes_[w_next_];
            uint64_t addr = w.addr + w.moved * p_.bus_bytes;
            bool last = w.moved + 1 == w.beats;
            if (in.wlast != last)
                return fail(t, "write", addr, last ? "wlast low on the last beat of the burst" : "wlast high before the last beat of the burst");
            if (!in.wstrb_full) return fail(t, "write", addr, "a strobe bit is clear (the core writes whole words)");
            std::memcpy(&mem_[addr], wdata, p_.bus_bytes);
            move(t, true);
            bytes_written_ += p_.bus_bytes;
            if (++w.moved == w.beats) {
                w.ready_at = t + p_.write_latency;
                ++w_next_;
            }
        }
        if (out_.bvalid && in.bready) {
            writes_.pop_front();
            --w_next_;
        }
        if (out_.arready && in.arvalid) {
            if (!check_burst(t, "read", in.araddr, in.arlen, in.arsize, in.arburst)) return false;
            if (!writes_.empty()) return fail(t, "read", in.araddr, "accepted while a write burst is in flight");
            uint64_t latency = p_.latency;
            if (p_.latency_max > p_.latency) latency += rng_.next() % (p_.latency_max - p_.latency + 1);
            reads_.push_back(Burst{in.araddr, in.arlen + 1u, 0, t, t + latency});
        }
        if (out_.awready && in.awvalid) {
            if (!check_burst(t, "write", in.awaddr, in.awlen, in.awsize, in.awburst)) return false;
            if (!reads_.empty()) return fail(t, "write", in.awaddr, "accepted while a read burst is in flight");
            writes_.push_back(Burst{in.awaddr, in.awlen + 1u, 0, t, 0});
        }
        return check_held(t, in);
    }

    // The cycle begin() and end() act in (cycles stepped so far).
    uint64_t now() const { return now_; }
    const DramOutputs& out() const { return out_; }
    const std::string& error() const { return error_; }
    const std::vector<uint8_t>& memory() const { return mem_; }
    uint64_t bytes_read() const { return bytes_read_; }
    uint64_t bytes_written() const { return bytes_written_; }

  private:
    struct Burst {
        uint64_t addr;
        uint32_t beats, moved;
        uint64_t accept;
        uint64_t ready_at;  // reads: first beat's earliest cycle; writes: B's earliest cycle
    };

    bool pace_ok(uint64_t t, bool write) const {
        uint64_t need = free_;
        if (moved_any_ && last_write_ != write) need += p_.turnaround * p_.num;
        return t * p_.num >= need;
    }

    void move(uint64_t t, bool write) {
        uint64_t floor = t * p_.num + 1 > p_.num ? t * p_.num + 1 - p_.num : 0;  // (t-1)*num + 1, at least 0
        free_ = std::max(free_, floor) + p_.bus_bytes * p_.den;
        last_write_ = write;
        moved_any_ = true;
    }

    bool fail(uint64_t t, const char* kind, uint64_t addr, const std::string& why) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "cycle %llu: %s at address 0x%llx: ", (unsigned long long)t, kind,
                      (unsigned long long)addr);
        error_ = buf + why;
        return false;
    }

    bool check_burst(uint64_t t, const char* kind, uint64_t addr, unsigned len, unsigned size, unsigned burst) {
        uint64_t bytes = (uint64_t{len} + 1) * p_.bus_bytes;
        char why[160];
        if (size != size_log2_) {
            std::snprintf(why, sizeof why, "AxSIZE %u is not the bus width (%u)", size, size_log2_);
            return fail(t, kind, addr, why);
        }
        if (burst != 1) {
            std::snprintf(why, sizeof why, "AxBURST %u is not INCR (1)", burst);
            return fail(t, kind, addr, why);
        }
        if (addr % p_.bus_bytes) return fail(t, kind, addr, "not aligned to the bus width");
        if (addr % p_.boundary + bytes > p_.boundary) {
            std::snprintf(why, sizeof why, "a burst of %u beats (%llu bytes) crosses a %llu-byte boundary",
                          len + 1, (unsigned long long)bytes, (unsigned long long)p_.boundary);
            return fail(t, kind, addr, why);
        }
        if (addr + bytes > mem_.size()) {
            std::snprintf(why, sizeof why, "a burst of %u beats reaches outside the memory (%zu bytes)", len + 1,
                          mem_.size());
            return fail(t, kind, addr, why);
        }
        return true;
    }

    // AXI: a valid, once high, stays high with its payload unchanged until its handshake.
    bool check_held(uint64_t t, const DramInputs& in) {
        if (ar_held_ && (!in.arvalid || in.araddr != ar_.araddr || in.arlen != ar_.arlen))
            return fail(t, "read", ar_.araddr, "arvalid dropped or AR changed before its handshake");
        if (aw_held_ && (!in.awvalid || in.awaddr != aw_.awaddr || in.awlen != aw_.awlen))
            return fail(t, "write", aw_.awaddr, "awvalid dropped or AW changed before its handshake");
        if (w_held_ && (!in.wvalid || in.wlast != w_last_))
            return fail(t, "write", w_addr_, "wvalid dropped or wlast changed before its handshake");
        ar_held_ = in.arvalid && !out_.arready;
        aw_held_ = in.awvalid && !out_.awready;
        w_held_ = in.wvalid && !out_.wready;
        ar_ = in;
        aw_ = in;
        w_last_ = in.wlast;
        if (w_next_ < writes_.size()) w_addr_ = writes_[w_next_].addr + writes_[w_next_].moved * p_.bus_bytes;
        return true;
    }

    DramParams p_;
    std::vector<uint8_t> mem_;
    Rng rng_;
    uint64_t stall_threshold_ = 0;
    unsigned size_log2_ = 0;
    uint64_t now_ = 0;
    uint64_t free_ = 0;
    bool last_write_ = false, moved_any_ = false;
    std::deque<Burst> reads_, writes_;  // accepted and unfinished, in order
    std::size_t w_next_ = 0;            // writes_[w_next_]: the burst taking W beats
    DramOutputs out_;
    DramInputs ar_, aw_;
    bool ar_held_ = false, aw_held_ = false, w_held_ = false, w_last_ = false;
    uint64_t w_addr_ = 0;
    uint64_t bytes_read_ = 0, bytes_written_ = 0;
    std::string error_;
};

}  // namespace vitaccel
