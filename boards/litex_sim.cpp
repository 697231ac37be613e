// Verilator harness of the simulated LiteX SoC (boards/litex_sim.py): the SoC's serial stream
// (LiteX's RS232PHYModel: one byte per valid/ready handshake) is bridged to one TCP connection on
// 127.0.0.1, so that the host code talks to the simulation as to a board (pyserial socket://).
//
// The bytes to the SoC are paced at one per --byte-cycles cycles (default 32): on a board the UART's
// byte time (4,340 cycles at 115200 baud and 50 MHz) is what lets the bridge's last SDRAM write
// land before the core, on its own LiteDRAM port, reads the memory (and the core's last write before
// the host reads it back); an unpaced stream would reach the SoC faster than any UART can.
//
// --axi-log FILE writes every handshake of the core's AXI4 master (the SoC's axi_monitor outputs) with
// its cycle, one per line: "AR presented accepted addr len", "R cycle last", "AW presented accepted addr
// len", "W cycle last", "B cycle", and "BUSY cycle 0|1" when the core's busy changes.
//
// Usage: vitaccel_soc_sim --port N [--byte-cycles N] [--max-cycles N] [--axi-log FILE]. Prints "listening on PORT" (the port
// actually bound when N is 0), waits for one connection, holds reset for 16 cycles, then runs until
// the host closes the connection (or max-cycles pass) and prints "cycles N".
#include "Vvitaccel_soc.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = 0;
    unsigned long long max_cycles = 0, byte_cycles = 32, next_byte = 32;
    FILE *axi_log = nullptr;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--byte-cycles") && i + 1 < argc) byte_cycles = strtoull(argv[++i], nullptr, 10);
        else if (!strcmp(argv[i], "--max-cycles") && i + 1 < argc) max_cycles = strtoull(argv[++i], nullptr, 10);
        else if (!strcmp(argv[i], "--axi-log") && i + 1 < argc) {
            axi_log = fopen(argv[++i], "w");
            if (!axi_log) {
                fprintf(stderr, "cannot write %s: %s\n", argv[i], strerror(errno));
                return 2;
            }
        }
    }
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (bind(server, (sockaddr *)&addr, sizeof addr) || listen(server, 1)) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 2;
    }
    socklen_t len = sizeof addr;
    getsockname(server, (sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int conn = accept(server, nullptr, nullptr);
    if (conn < 0) {
        fprintf(stderr, "accept: %s\n", strerror(errno));
        return 2;
    }
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);

    Vvitaccel_soc top;
    std::deque<unsigned char> to_soc, to_host;
    unsigned long long cycle = 0;
    bool open = true;
    long long ar_since = -1, aw_since = -1;
    int busy = 0;
    top.sys_clk = 0;
    top.sys_rst = 1;
    top.serial_sink_valid = 0;
    top.serial_source_ready = 1;
    top.eval();
    while (open && (!max_cycles || cycle < max_cycles)) {
        if (cycle == 16) top.sys_rst = 0;
        // The socket, every 64 cycles (a byte takes several cycles of the bridge anyway).
        if ((cycle & 63) == 0) {
            unsigned char buf[4096];
            ssize_t n = recv(conn, buf, sizeof buf, 0);
            if (n > 0) to_soc.insert(to_soc.end(), buf, buf + n);
            else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) open = false;
            while (!to_host.empty()) {
                unsigned char out[4096];
                size_t k = 0;
                while (k < sizeof out && !to_host.empty()) { out[k++] = to_host.front(); to_host.pop_front(); }
                size_t sent = 0;
                while (sent < k) {
                    ssize_t m = send(conn, out + sent, k - sent, MSG_NOSIGNAL);
                    if (m > 0) sent += m;
                    else if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { open = false; break; }
                }
                if (!open) break;
            }
        }
        if (cycle >= next_byte && !top.serial_sink_valid && !to_soc.empty()) {
            next_byte = cycle + byte_cycles;
            top.serial_sink_valid = 1;
            top.serial_sink_data = to_soc.front();
            to_soc.pop_front();
        }
        top.eval();
        // What the rising edge takes: the byte offered to the SoC, the byte it offers.
        bool took = top.serial_sink_valid && top.serial_sink_ready;
        bool gave = top.serial_source_valid && top.serial_source_ready;
        unsigned char byte = top.serial_source_data;
        if (axi_log) {
            unsigned long long c = cycle;
            if (top.axi_monitor_arvalid && ar_since < 0) ar_since = c;
            if (top.axi_monitor_awvalid && aw_since < 0) aw_since = c;
            if (top.axi_monitor_arvalid && top.axi_monitor_arready) {
                fprintf(axi_log, "AR %lld %llu %u %u\n", ar_since, c, top.axi_monitor_araddr, top.axi_monitor_arlen);
                ar_since = -1;
            }
            if (top.axi_monitor_awvalid && top.axi_monitor_awready) {
                fprintf(axi_log, "AW %lld %llu %u %u\n", aw_since, c, top.axi_monitor_awaddr, top.axi_monitor_awlen);
                aw_since = -1;
            }
            if (top.axi_monitor_rvalid && top.axi_monitor_rready) fprintf(axi_log, "R %llu %u\n", c, top.axi_monitor_rlast);
            if (top.axi_monitor_wvalid && top.axi_monitor_wready) fprintf(axi_log, "W %llu %u\n", c, top.axi_monitor_wlast);
            if (top.axi_monitor_bvalid && top.axi_monitor_bready) fprintf(axi_log, "B %llu\n", c);
            if (top.axi_monitor_busy != busy) {
                busy = top.axi_monitor_busy;
                fprintf(axi_log, "BUSY %llu %d\n", c, busy);
            }
        }
        top.sys_clk = 1;
        top.eval();
        top.sys_clk = 0;
        top.eval();
        if (took) top.serial_sink_valid = 0;
        if (gave) to_host.push_back(byte);
        cycle++;
    }
    top.final();
    if (axi_log) fclose(axi_log);
    printf("cycles %llu\n", cycle);
    close(conn);
    close(server);
    return 0;
}
