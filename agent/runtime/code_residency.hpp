// Keeps only the code the agent runs resident, instead of most of its 16 MB binary.
//
// Why: on a read fault in file-backed memory Linux maps more than the faulting page
// ("fault-around": 64 KiB, and since 6.18 whole large page-cache folios). For a static binary
// whose startup touches TLS, SQLite, YAML and the CLI, that maps nearly all of .text and
// .rodata: 8-10 MB of RSS, most of it code the daemon never runs again. The pages stay in the
// page cache either way; what changes is how many the process holds mapped, which is what RSS
// (and the reclaim protection of mapped executable pages) counts.
//
// How: the kernel skips fault-around on a VMA registered for userfaultfd write-protection.
// With UFFD_FEATURE_WP_ASYNC (Linux 6.7+) the kernel resolves such write faults itself, so no
// handler thread exists, and text is never written anyway. The read-only, never-written
// mappings of the executable are registered and their present pages dropped
// (MADV_DONTNEED, safe only because they hold no private copy, which is checked); from then
// on each page is mapped when first run. One descriptor stays open for the process's life
// (closing it would end the registration). Without userfaultfd, WP_ASYNC or permission, nothing
// changes and the reason is reported.
#pragma once

#include <cstddef>
#include <string>

namespace neco {

struct CodeResidency {
  bool applied = false;
  std::size_t registered_bytes = 0;  // size of the mappings now mapped page by page
  std::size_t dropped_bytes = 0;     // resident bytes released when they were registered
  std::string detail;                // why not, when not applied
};

// Call once, early, while the process has one thread (a concurrent write to a mapping being
// checked could otherwise race the check). The environment variable NECO_CODE_FAULT_AROUND=1
// turns it off.
CodeResidency map_code_on_demand();

// Unmaps the registered mappings' pages again (they come back, one by one, as they run): once
// the agent has started, what it ran only to start no longer counts. Thread-safe; does nothing
// when map_code_on_demand() did not apply.
void release_code_pages();

}  // namespace neco
