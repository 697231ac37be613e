// A standalone AXI4 master for sim/dram.h (tests/sim/test_dram_model.py compiles it with g++):
// it reads a burst script on stdin, drives the model cycle by cycle and prints when each burst's
// address was accepted, when each of its beats moved and its response cycle.
//
// stdin:  bus_bytes latency num den turnaround write_latency max_bursts memory_bytes
//         count
//         R|W address beats issue        (count lines)
// stdout: per burst "accept response beat0 beat1 ...", then "bytes READ WRITTEN"
//
// The master (vitaccel.memory.DramTimeline's assumptions): bursts in script order, one address at a
// time; burst i's address valid from cycle max(issue, previous address handshake + 1) and not
// before every burst of the other direction has finished (last R beat taken, B taken); its W data
// offered from the cycle its AW is first valid, bursts in order, no gaps; rready and bready high.

#include "dram.h"

#include <cstdio>
#include <deque>
#include <iostream>
#include <vector>

int main() {
    vitaccel::DramParams p;
    uint64_t memory_bytes = 0;
    std::size_t count = 0;
    std::cin >> p.bus_bytes >> p.latency >> p.num >> p.den >> p.turnaround >> p.write_latency >> p.max_bursts
        >> memory_bytes >> count;
    p.latency_max = p.latency;
    struct Burst {
        bool write;
        uint64_t addr, beats, issue;
        uint64_t accept = 0, response = 0;
        std::vector<uint64_t> moved;
    };
    std::vector<Burst> bursts(count);
    for (Burst& b : bursts) {
        char kind;
        std::cin >> kind >> b.addr >> b.beats >> b.issue;
        b.write = kind == 'W';
    }
    if (!std::cin || !p.check().empty()) {
        std::fprintf(stderr, "dram_driver: bad input %s\n", p.check().c_str());
        return 1;
    }
    vitaccel::Dram dram(p, std::vector<uint8_t>(memory_bytes));
    std::vector<uint8_t> wdata(p.bus_bytes, 0xA5);

    std::size_t next = 0;                      // the burst whose address is (to be) presented
    bool presented = false;                    // bursts[next]'s address has been valid
    uint64_t last_accept_plus1 = 0;
    std::deque<std::size_t> reads, writes;     // address accepted, not finished
    std::deque<std::size_t> wqueue;            // W data offered: bursts with beats left
    std::size_t wbeat = 0;                     // beats of wqueue.front() moved
    std::size_t finished = 0;
    for (uint64_t t = 0; finished < count; ++t) {
        if (t > 100000000) {
            std::fprintf(stderr, "dram_driver: no progress\n");
            return 1;
        }
        const vitaccel::DramOutputs& out = dram.begin();
        vitaccel::DramInputs in;
        in.rready = in.bready = true;
        if (next < count) {
            Burst& b = bursts[next];
            bool other_busy = b.write ? !reads.empty() : !writes.empty();
            if (presented || (t >= b.issue && t >= last_accept_plus1 && !other_busy)) {
                if (!presented && b.write) wqueue.push_back(next);
                presented = true;
                unsigned len = static_cast<unsigned>(b.beats - 1), size = 0;
                while ((uint64_t{1} << size) < p.bus_bytes) ++size;
                if (b.write) {
                    in.awvalid = true, in.awaddr = b.addr, in.awlen = len, in.awsize = size, in.awburst = 1;
                } else {
                    in.arvalid = true, in.araddr = b.addr, in.arlen = len, in.arsize = size, in.arburst = 1;
                }
            }
        }
        if (!wqueue.empty()) {
            in.wvalid = true;
            in.wlast = wbeat + 1 == bursts[wqueue.front()].beats;
        }
        // Handshakes, as the model will see them.
        bool ar = out.arready && in.arvalid, aw = out.awready && in.awvalid;
        bool r = out.rvalid && in.rready, w = out.wready && in.wvalid, b = out.bvalid && in.bready;
        if (!dram.end(in, wdata.data())) {
            std::fprintf(stderr, "dram_driver: %s\n", dram.error().c_str());
            return 2;
        }
        if (r) {
            Burst& h = bursts[reads.front()];
            h.moved.push_back(t);
            if (h.moved.size() == h.beats) {
                h.response = t;
                reads.pop_front();
                ++finished;
            }
        }
        if (w) {
            bursts[wqueue.front()].moved.push_back(t);
            if (++wbeat == bursts[wqueue.front()].beats) {
                wqueue.pop_front();
                wbeat = 0;
            }
        }
        if (b) {
            bursts[writes.front()].response = t;
            writes.pop_front();
            ++finished;
        }
        if (ar || aw) {
            bursts[next].accept = t;
            (aw ? writes : reads).push_back(next);
            last_accept_plus1 = t + 1;
            ++next;
            presented = false;
        }
    }
    for (const Burst& b : bursts) {
        std::printf("%llu %llu", (unsigned long long)b.accept, (unsigned long long)b.response);
        for (uint64_t c : b.moved) std::printf(" %llu", (unsigned long long)c);
        std::printf("\n");
    }
    std::printf("bytes %llu %llu\n", (unsigned long long)dram.bytes_read(), (unsigned long long)dram.bytes_written());
    return 0;
}
