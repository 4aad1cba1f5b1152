// The `neco` command line: `neco agent` runs the daemon; every other subcommand talks to the
// local agent's admin endpoint or works on files.
#pragma once

namespace neco::cli {

// Runs the command line; returns the process exit code (0 ok, 1 failure, 2 usage error).
int main(int argc, char** argv);

}  // namespace neco::cli
