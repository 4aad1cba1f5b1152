// `neco assets`: list, show, upload and delete the netboot boot assets through the local admin
// endpoint. An upload hashes the file locally (SHA-256), sends it in 512 KiB chunks (the admin
// endpoint bounds bodies to 1 MiB), resumes where the agent says the upload stands, and commits
// with the size and hash so the agent verifies what it received.
#include <fmt/format.h>
#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/cli/admin_client.hpp"
#include "agent/cli/command.hpp"
#include "modules/netboot/sha256.hpp"

namespace neco::netboot {
namespace {

using cli::kFailed;
using cli::kOk;
using nlohmann::json;

constexpr std::size_t kChunk = 512UL * 1024;
constexpr int kMaxRetries = 5;  // consecutive failed chunk sends before giving up

const char* const kSynopsis =
    "assets list [--json]\n"
    "       neco assets get NAME [--json]\n"
    "       neco assets upload NAME FILE [--content-type TYPE] [--json]\n"
    "       neco assets delete NAME [--json]\n\n"
    "Boot assets (kernels, initrds, iPXE binaries, any file) that every controller's boot\n"
    "server hands out at /boot/assets/NAME. An upload is verified by its SHA-256 and then\n"
    "replicated to the other controllers.";

std::string human_size(std::uint64_t bytes) {
  constexpr std::array<const char*, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
  auto v = static_cast<double>(bytes);
  std::size_t u = 0;
  while (v >= 1024 && u + 1 < units.size()) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units.at(u));
}

void print_asset(const json& a) {
  std::string holders;
  for (const auto& h : a.value("holders", json::array()))
    holders += (holders.empty() ? "" : ", ") + h.get<std::string>();
  std::printf(
      "name:         %s\nsize:         %s (%llu bytes)\nsha256:       %s\ncontent type: %s\n"
      "created:      %s by %s\nholders:      %s\nhere:         %s\n",
      a.value("name", std::string()).c_str(), human_size(a.value("size", std::uint64_t{0})).c_str(),
      static_cast<unsigned long long>(a.value("size", std::uint64_t{0})),
      a.value("sha256", std::string()).c_str(), a.value("content_type", std::string()).c_str(),
      cli::format_age(a.value("created", std::int64_t{0})).c_str(),
      a.value("who", std::string()).c_str(), holders.c_str(),
      a.value("local", false) ? "yes" : "no");
}

struct LocalFile {
  std::uint64_t size = 0;
  std::string sha256;
};

bool hash_local(const std::string& path, LocalFile& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "neco assets: cannot open '%s'\n", path.c_str());
    return false;
  }
  Sha256 sha;
  std::string buf(1U << 20, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    sha.update(std::string_view(buf.data(), n));
    out.size += n;
  }
  if (in.bad()) {
    std::fprintf(stderr, "neco assets: cannot read '%s'\n", path.c_str());
    return false;
  }
  out.sha256 = sha.hex();
  return !out.sha256.empty();
}

// The JSON of a reply, or null when it is not JSON.
json parse_reply(const cli::AdminReply& r) {
  return json::parse(r.body, nullptr, false);
}

std::string reply_message(const cli::AdminReply& r) {
  const auto j = parse_reply(r);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) {
    return j["message"].get<std::string>();
  }
  return r.body;
}

// Sends the file from the agent's offset on; true once every byte is there.
bool send_chunks(const cli::AdminTarget& target, const std::string& name, const std::string& path,
                 const LocalFile& local, bool& resumed) {
  const std::string base = "/v1/netboot/assets/" + name + "/upload";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "neco assets: cannot open '%s'\n", path.c_str());
    return false;
  }
  std::uint64_t offset = 0;
  int failures = 0;
  bool restarted = false;
  std::string chunk;
  // Every round either advances by a chunk or counts a failure: bounded by both.
  const std::uint64_t max_rounds = local.size / kChunk + 2 + std::uint64_t{2} * kMaxRetries;
  for (std::uint64_t round = 0; round < max_rounds; ++round) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, local.size - offset));
    chunk.resize(n);
    in.clear();
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(chunk.data(), static_cast<std::streamsize>(n));
    if (static_cast<std::size_t>(in.gcount()) != n) {
      std::fprintf(stderr, "neco assets: '%s' changed while uploading\n", path.c_str());
      return false;
    }
    auto r = cli::admin_request(target, "PUT", fmt::format("{}?offset={}", base, offset), chunk,
                                std::chrono::seconds(60));
    if (!r) {
      if (++failures > kMaxRetries) {
        std::fprintf(stderr, "neco: %s\n", r.error().message.c_str());
        return false;
      }
      continue;  // the agent's answer to the retry (maybe 409) says where it stands
    }
    const auto j = parse_reply(*r);
    if (r->status == 409 && j.is_object() && j.contains("offset") &&
        j["offset"].is_number_unsigned()) {
      const auto expected = j["offset"].get<std::uint64_t>();
      if (expected > local.size || restarted) {
        // Not a prefix of this file (or we already started over once): start over.
        if (restarted && ++failures > kMaxRetries) {
          std::fprintf(stderr, "neco assets: the agent's upload of '%s' keeps changing: %s\n",
                       name.c_str(), reply_message(*r).c_str());
          return false;
        }
        (void)cli::admin_request(target, "DELETE", base);
        offset = 0;
        restarted = true;
        continue;
      }
      // An earlier, interrupted upload: continue it (the commit verifies the whole file).
      offset = expected;
      resumed = resumed || expected > 0;
      continue;
    }
    if (r->status != 200 || !j.is_object() || !j.contains("offset")) {
      std::fprintf(stderr, "neco assets: PUT %s failed (%ld): %s\n", base.c_str(), r->status,
                   reply_message(*r).c_str());
      return false;
    }
    failures = 0;
    offset = j["offset"].get<std::uint64_t>();
    if (offset == local.size) return true;
  }
  std::fprintf(stderr, "neco assets: gave up sending '%s': too many retries\n", path.c_str());
  return false;
}

int upload(const cli::AdminTarget& target, const std::string& name, const std::string& path,
           const std::string& content_type, bool as_json) {
  LocalFile local;
  if (!hash_local(path, local)) return kFailed;
  const json commit = {
      {"sha256", local.sha256}, {"size", local.size}, {"content_type", content_type}};
  // A commit that fails its hash check after resuming someone else's partial upload discards
  // that upload; the second round then sends the whole file.
  for (int round = 0; round < 2; ++round) {
    bool resumed = false;
    if (!send_chunks(target, name, path, local, resumed)) return kFailed;
    // The agent hashes the whole upload: allow for a large file on a slow disk.
    auto r = cli::admin_request(target, "POST", "/v1/netboot/assets/" + name, commit.dump(),
                                std::chrono::minutes(5));
    if (!r) {
      std::fprintf(stderr, "neco: %s\n", r.error().message.c_str());
      return kFailed;
    }
    if (r->status == 400 && resumed && round == 0) continue;
    if (r->status != 200) {
      std::fprintf(stderr, "neco assets: commit of '%s' failed (%ld): %s\n", name.c_str(),
                   r->status, reply_message(*r).c_str());
      return kFailed;
    }
    const auto j = parse_reply(*r);
    if (as_json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("uploaded %s: %s, sha256 %s\n", name.c_str(), human_size(local.size).c_str(),
                  local.sha256.c_str());
    }
    return kOk;
  }
  return kFailed;
}

int cmd_assets(const std::vector<std::string>& args) {
  cli::po::options_description desc("Options");
  desc.add_options()("action", cli::po::value<std::string>()->default_value("list"),
                     "list, get, upload or delete")(
      "name", cli::po::value<std::string>(), "asset name")("file", cli::po::value<std::string>(),
                                                           "file to upload")(
      "content-type", cli::po::value<std::string>()->default_value("application/octet-stream"),
      "Content-Type the boot server answers with")("json", "print as JSON");
  cli::add_target_options(desc);
  cli::po::positional_options_description pos;
  pos.add("action", 1).add("name", 1).add("file", 1);
  cli::po::variables_map vm;
  int code = kOk;
  if (!cli::parse("assets", kSynopsis, desc, &pos, args, vm, code)) return code;
  const auto action = vm["action"].as<std::string>();
  const bool as_json = vm.count("json") != 0;
  const auto target = cli::target_from(vm);
  const auto name = vm.count("name") != 0 ? vm["name"].as<std::string>() : std::string();
  if (action != "list" && name.empty()) {
    return cli::usage_error("assets", "assets " + action + " needs a NAME");
  }
  json j;
  if (action == "list") {
    if (!cli::fetch_json(target, "GET", "/v1/netboot/assets", j)) return kFailed;
    if (as_json) {
      std::printf("%s\n", j.dump(2).c_str());
      return kOk;
    }
    std::printf("%-32s %10s  %-12s %-5s %s\n", "NAME", "SIZE", "SHA256", "HERE", "HOLDERS");
    for (const auto& a : j.value("assets", json::array())) {
      std::string holders;
      for (const auto& h : a.value("holders", json::array()))
        holders += (holders.empty() ? "" : ",") + h.get<std::string>();
      std::printf("%-32s %10s  %-12s %-5s %s\n", a.value("name", std::string()).c_str(),
                  human_size(a.value("size", std::uint64_t{0})).c_str(),
                  a.value("sha256", std::string()).substr(0, 12).c_str(),
                  a.value("local", false) ? "yes" : "no", holders.c_str());
    }
    return kOk;
  }
  if (action == "get") {
    if (!cli::fetch_json(target, "GET", "/v1/netboot/assets/" + name, j)) return kFailed;
    if (as_json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      print_asset(j);
    }
    return kOk;
  }
  if (action == "delete") {
    if (!cli::fetch_json(target, "DELETE", "/v1/netboot/assets/" + name, j)) return kFailed;
    if (as_json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("deleted %s\n", name.c_str());
    }
    return kOk;
  }
  if (action == "upload") {
    if (vm.count("file") == 0) return cli::usage_error("assets", "assets upload needs a FILE");
    return upload(target, name, vm["file"].as<std::string>(), vm["content-type"].as<std::string>(),
                  as_json);
  }
  return cli::usage_error("assets",
                          "unknown action '" + action + "' (known: list, get, upload, delete)");
}

}  // namespace
}  // namespace neco::netboot

// NOLINTNEXTLINE(cert-err58-cpp): registration runs at static init by design (command.hpp)
NECO_REGISTER_COMMAND("assets", "list, upload and delete netboot boot assets",
                      neco::netboot::cmd_assets);
