// neco: one binary for the agent daemon and its command line.
#include "agent/cli/cli.hpp"

int main(int argc, char** argv) {
  return neco::cli::main(argc, argv);
}
