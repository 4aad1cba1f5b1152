// What a `neco` subcommand is built from, shared by the core's commands in cli.cpp and the
// commands compiled-in modules contribute (`neco machines` exists only when netboot is built).
// A module registers its commands with NECO_REGISTER_COMMAND in a file of its link_whole
// library; `neco --help` lists them with the core's, sorted by name.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "agent/cli/admin_client.hpp"

namespace neco::cli {

namespace po = boost::program_options;

// Exit codes of every command.
constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;

struct Command {
  const char* name;
  const char* summary;  // one line for `neco --help`
  int (*run)(const std::vector<std::string>& args);
};

// Adds a command (from a static initializer); a second command of the same name is refused
// and reported when the CLI starts.
bool register_command(Command command);

// Prints "neco COMMAND: MESSAGE" and the --help hint to stderr; returns kUsage.
int usage_error(const std::string& command, const std::string& message);

// Parses `args` with `desc` (and `positional`, if any), adding --help. Returns false when the
// caller should exit with `code`: after printing help (kOk) or a usage error (kUsage).
bool parse(const std::string& command, const std::string& synopsis, po::options_description& desc,
           const po::positional_options_description* positional,
           const std::vector<std::string>& args, po::variables_map& vm, int& code);

// --admin URL and --socket PATH, and the target they (or $NECO_ADMIN) select.
void add_target_options(po::options_description& desc);
AdminTarget target_from(const po::variables_map& vm);

// Sends one request and parses the JSON answer; prints the error (the agent's message for a
// status >= 400 other than 503) and returns false on any failure.
bool fetch_json(const AdminTarget& target, const std::string& method, const std::string& path,
                nlohmann::json& out, const std::string& body = "");

// One action of a command with actions ("neco machines list ..."): its name and what runs it
// with the arguments after the name.
using Action = std::pair<const char*, std::function<int(const std::vector<std::string>&)>>;

// Runs the action args[0] names: a usage error when there is none or it is unknown (listing
// the known ones), "Usage: neco SYNOPSIS" for --help/-h/help.
int dispatch(const std::string& command, const char* synopsis,
             std::initializer_list<Action> actions, const std::vector<std::string>& args);

// "3m ago" for a unix time, "never" for 0.
std::string format_age(std::int64_t unix_seconds);

}  // namespace neco::cli

#define NECO_CLI_CONCAT_INNER(a, b) a##b
#define NECO_CLI_CONCAT(a, b) NECO_CLI_CONCAT_INNER(a, b)
// NECO_REGISTER_COMMAND("machines", "one line", run_fn) at namespace scope.
#define NECO_REGISTER_COMMAND(name, summary, fn)                                           \
  [[maybe_unused]] static const bool NECO_CLI_CONCAT(neco_command_registered_, __LINE__) = \
      ::neco::cli::register_command(::neco::cli::Command{name, summary, fn})
