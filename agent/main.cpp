// neco: one binary for the agent daemon and its command line.
#include <malloc.h>

#include <cstdlib>

#include "agent/cli/cli.hpp"

int main(int argc, char** argv) {
  // glibc gives each thread that allocates an arena of its own, up to 8 per core. The agent's
  // threads (I/O, workers, exporter lanes) allocate little and rarely at once, and every extra
  // arena keeps touched pages resident: two arenas cut the daemon's anonymous memory by about
  // a fifth (exporter benchmark) at no measurable cost in scrape time. MALLOC_ARENA_MAX or
  // GLIBC_TUNABLES in the environment still decide (all of these settings) for anyone who
  // wants otherwise.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr) {
    mallopt(M_ARENA_MAX, 2);
    // A scrape allocates and frees about a megabyte; glibc gave it back to the kernel after
    // each one (brk down, then page faults to grow again: a tenth of a scrape's CPU). Keep up
    // to 4 MiB of free heap instead.
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
  }
  return neco::cli::main(argc, argv);
}
