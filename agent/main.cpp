// neco: one binary for the agent daemon and its command line.
#include <malloc.h>

#include <cstdlib>

#include "agent/cli/cli.hpp"

int main(int argc, char** argv) {
  // glibc gives each thread that allocates an arena of its own, up to 8 per core. The agent's
  // threads (I/O, workers, exporter lanes) allocate little and rarely at once, and every extra
  // arena keeps touched pages resident: two arenas cut the daemon's anonymous memory by about
  // a fifth (exporter benchmark) at no measurable cost in scrape time. MALLOC_ARENA_MAX or
  // GLIBC_TUNABLES in the environment still decide for anyone who wants otherwise.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr) {
    mallopt(M_ARENA_MAX, 2);
  }
  return neco::cli::main(argc, argv);
}
