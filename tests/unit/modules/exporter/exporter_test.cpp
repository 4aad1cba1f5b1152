// The exporter's collectors against procfs files recorded from a real machine (compared with
// golden expositions), the scrape runner's per-collector deadline, the textfile parser, the
// filesystem collector and the module's config and registration.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/metrics/exposition.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "modules/exporter/exporter.hpp"
#include "modules/exporter/file_cache.hpp"
#include "modules/exporter/scrape_runner.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/exporter/exporter_test_support.hpp"

namespace {

namespace ex = neco::exporter;
using neco::metrics::MetricFamily;
using namespace neco::exporter::testing;

}  // namespace

TEST_CASE("procfs collectors match their golden expositions", "[exporter]") {
  for (const char* name :
       {"meminfo", "loadavg", "cpu", "stat", "vmstat", "filefd", "uname", "netdev"}) {
    SECTION(name) {
      check_golden(name, render(run_collector(name, fixture_paths())));
    }
  }
}

TEST_CASE("collector values follow node_exporter's units and names", "[exporter]") {
  auto mem = run_collector("meminfo", fixture_paths());
  // MemTotal in kB times 1024; counts without a unit keep their name.
  const auto meminfo = slurp(kData / "fixtures/proc/meminfo");
  const auto kb = std::stod(meminfo.substr(meminfo.find(':') + 1));
  CHECK(value_of(mem, "node_memory_MemTotal_bytes") == kb * 1024);
  CHECK(neco::metrics::find_family(mem, "node_memory_Active_anon_bytes") != nullptr);
  CHECK(neco::metrics::find_family(mem, "node_memory_HugePages_Total") != nullptr);

  auto cpu = run_collector("cpu", fixture_paths());
  const auto stat = slurp(kData / "fixtures/proc/stat");
  const auto user0 = std::stod(stat.substr(stat.find("cpu0 ") + 5));
  CHECK(value_of(cpu, "node_cpu_seconds_total", "cpu", "0") == Approx(user0 / 100));

  auto net = run_collector("netdev", fixture_paths());
  const auto* rx = neco::metrics::find_family(net, "node_network_receive_bytes_total");
  REQUIRE(rx != nullptr);
  for (const auto& s : rx->samples)
    CHECK(rx->labels_of(s)[0].value != "lo");

  auto t = run_collector("time", fixture_paths());
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(value_of(t, "node_time_seconds") == Approx(now).margin(5));
}

TEST_CASE("a missing procfs file is a collector error", "[exporter]") {
  auto c = ex::find_collector("meminfo")->make({});
  std::vector<MetricFamily> out;
  auto r = c->collect({"/nonexistent", "/nonexistent", "/"}, out);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("/nonexistent/meminfo") != std::string::npos);
}

TEST_CASE("filesystem reports the mounts not excluded", "[exporter]") {
  const ex::ExporterConfig defaults;
  ex::CollectorOptions options;
  options.mount_points_exclude = defaults.filesystem.mount_points_exclude;
  options.fs_types_exclude = defaults.filesystem.fs_types_exclude;
  auto fams = run_collector("filesystem", fixture_paths(), options);
  const auto* size = neco::metrics::find_family(fams, "node_filesystem_size_bytes");
  REQUIRE(size != nullptr);
  REQUIRE(size->samples.size() == 1);  // /proc and /sys are excluded
  const auto labels = size->labels_of(size->samples[0]);
  REQUIRE(labels.size() == 3);
  CHECK(labels[0].name == "device");
  CHECK(labels[1].name == "fstype");
  CHECK(labels[2].name == "mountpoint");
  CHECK(labels[2].value == "/");
  CHECK(size->samples[0].value > 0);
  CHECK(value_of(fams, "node_filesystem_device_error", "mountpoint", "/") == 0);
  for (const char* f :
       {"node_filesystem_free_bytes", "node_filesystem_avail_bytes", "node_filesystem_files",
        "node_filesystem_files_free", "node_filesystem_readonly"}) {
    CHECK(neco::metrics::find_family(fams, f) != nullptr);
  }
}

TEST_CASE("a mount whose statfs hangs is reported stuck and skipped until it returns",
          "[exporter][filesystem]") {
  neco::testing::TempDir dir;
  std::filesystem::create_directories(dir / "proc/self");
  neco::testing::write_file(dir / "proc/self/mounts",
                            "/dev/root / ext4 rw,relatime 0 0\n"
                            "server:/export /mnt/stuck nfs4 rw,relatime 0 0\n");
  struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> stuck_calls{0};
    std::atomic<int> stuck_returns{0};
  };
  auto gate = std::make_shared<Gate>();
  ex::CollectorOptions options;
  options.mount_points_exclude = "^/(dev|proc|sys)($|/)";
  options.fs_types_exclude = "^proc$";
  options.mount_timeout = std::chrono::milliseconds(100);
  options.statfs = [gate](const char* path, struct ::statfs* buf) {
    if (std::string_view(path) != "/mnt/stuck") return ::statfs(path, buf);
    ++gate->stuck_calls;
    std::unique_lock lock(gate->mutex);
    gate->cv.wait(lock, [&] { return gate->open; });
    *buf = {};
    buf->f_bsize = 4096;
    buf->f_blocks = 10;
    ++gate->stuck_returns;
    return 0;
  };
  auto collector = ex::find_collector("filesystem")->make(options);
  const ex::Paths paths{dir / "proc", dir / "sys", "/"};
  auto scrape = [&] {
    std::vector<MetricFamily> out;
    REQUIRE(collector->collect(paths, out).has_value());
    return out;
  };
  auto has_size = [](const std::vector<MetricFamily>& fams, std::string_view mountpoint) {
    const auto* f = neco::metrics::find_family(fams, "node_filesystem_size_bytes");
    for (const auto& s : f->samples) {
      if (f->labels_of(s)[2].value == mountpoint) return true;
    }
    return false;
  };

  auto t0 = std::chrono::steady_clock::now();
  auto first = scrape();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  CHECK(value_of(first, "node_filesystem_device_error", "mountpoint", "/mnt/stuck") == 1);
  CHECK(value_of(first, "node_filesystem_device_error", "mountpoint", "/") == 0);
  CHECK_FALSE(has_size(first, "/mnt/stuck"));
  CHECK(has_size(first, "/"));

  // Still hanging: reported at once without a second statfs.
  t0 = std::chrono::steady_clock::now();
  auto second = scrape();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(90));
  CHECK(gate->stuck_calls == 1);
  CHECK(value_of(second, "node_filesystem_device_error", "mountpoint", "/mnt/stuck") == 1);
  CHECK_FALSE(has_size(second, "/mnt/stuck"));

  {
    std::lock_guard lock(gate->mutex);
    gate->open = true;
    gate->cv.notify_all();
  }
  REQUIRE(neco::testing::wait_for([&] { return gate->stuck_returns == 1; }));
  REQUIRE(neco::testing::wait_for([&] {
    const auto out = scrape();
    return value_of(out, "node_filesystem_device_error", "mountpoint", "/mnt/stuck") == 0;
  }));
  CHECK(gate->stuck_calls == 2);
  const auto back = scrape();
  CHECK(value_of(back, "node_filesystem_size_bytes", "mountpoint", "/mnt/stuck") == 40960);
}

TEST_CASE("textfile exports good files and flags a malformed one", "[exporter]") {
  neco::testing::TempDir dir;
  neco::testing::write_file(dir / "good.prom",
                            "# HELP job_last_success_seconds Last success.\n"
                            "# TYPE job_last_success_seconds gauge\n"
                            "job_last_success_seconds{job=\"backup\",path=\"a\\\"b\"} 1.7e9\n"
                            "# TYPE lat histogram\n"
                            "lat_bucket{le=\"1\"} 2\nlat_bucket{le=\"+Inf\"} 3\n"
                            "lat_sum 4.5\nlat_count 3\n");
  neco::testing::write_file(dir / "bad.prom", "ok_metric 1\nbroken{label=\"x} 1\n");
  neco::testing::write_file(dir / "stamped.prom", "with_timestamp 1 1700000000000\n");
  neco::testing::write_file(dir / "ignored.txt", "not read\n");
  ex::CollectorOptions options;
  options.textfile_directory = dir.path();
  auto fams = run_collector("textfile", fixture_paths(), options);
  CHECK(value_of(fams, "node_textfile_scrape_error") == 1);
  CHECK(value_of(fams, "job_last_success_seconds", "job", "backup") == 1.7e9);
  CHECK(value_of(fams, "job_last_success_seconds", "path", "a\"b") == 1.7e9);
  const auto* lat = neco::metrics::find_family(fams, "lat");
  REQUIRE(lat != nullptr);
  CHECK(lat->type == neco::metrics::MetricType::histogram);
  CHECK(lat->samples.size() == 4);
  CHECK(neco::metrics::find_family(fams, "ok_metric") == nullptr);  // its file is skipped
  CHECK(neco::metrics::find_family(fams, "with_timestamp") == nullptr);
  const auto* mtime = neco::metrics::find_family(fams, "node_textfile_mtime_seconds");
  REQUIRE(mtime != nullptr);
  REQUIRE(mtime->samples.size() == 1);
  CHECK(mtime->labels_of(mtime->samples[0])[0].value == (dir / "good.prom").string());
  // The whole exposition stays valid.
  CHECK(render(fams).find("lat_bucket{le=\"+Inf\"} 3") != std::string::npos);

  neco::testing::write_file(dir / "bad.prom", "# TYPE x gauge\n# TYPE x counter\nx 1\n");
  std::filesystem::remove(dir / "stamped.prom");
  neco::testing::write_file(dir / "good.prom", "a 1\nb 2\n");
  fams = run_collector("textfile", fixture_paths(), options);
  CHECK(value_of(fams, "node_textfile_scrape_error") == 1);
  std::filesystem::remove(dir / "bad.prom");
  fams = run_collector("textfile", fixture_paths(), options);
  CHECK(value_of(fams, "node_textfile_scrape_error") == 0);
  CHECK(value_of(fams, "b") == 2);
}

namespace {

// Blocks in collect() until released; counts how often it was started.
class BlockingCollector final : public ex::Collector {
 public:
  struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> started{0};
    std::atomic<int> finished{0};
    void release() {
      std::lock_guard lock(mutex);
      open = true;
      cv.notify_all();
    }
  };
  explicit BlockingCollector(std::shared_ptr<Gate> gate) : gate_(std::move(gate)) {}
  std::string_view name() const override { return "slow"; }
  neco::Expected<void> collect(const ex::Paths&, std::vector<MetricFamily>& out) override {
    ++gate_->started;
    std::unique_lock lock(gate_->mutex);
    gate_->cv.wait(lock, [&] { return gate_->open; });
    MetricFamily f{.name = "slow_metric", .help = "x", .type = neco::metrics::MetricType::gauge};
    f.add(1);
    out.push_back(std::move(f));
    ++gate_->finished;
    return {};
  }

 private:
  std::shared_ptr<Gate> gate_;
};

}  // namespace

TEST_CASE("a collector past its deadline reports failure and is not started twice",
          "[exporter][deadline]") {
  auto gate = std::make_shared<BlockingCollector::Gate>();
  std::vector<std::unique_ptr<ex::Collector>> collectors;
  collectors.push_back(std::make_unique<BlockingCollector>(gate));
  collectors.push_back(ex::find_collector("loadavg")->make({}));
  const auto timeout = std::chrono::milliseconds(200);
  ex::ScrapeRunner runner(std::move(collectors), fixture_paths(), timeout);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<MetricFamily> out;
  runner.scrape(out);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= timeout);
  CHECK(took < timeout * 3);
  CHECK(value_of(out, "node_scrape_collector_success", "collector", "slow") == 0);
  CHECK(value_of(out, "node_scrape_collector_success", "collector", "loadavg") == 1);
  CHECK(value_of(out, "node_scrape_collector_duration_seconds", "collector", "slow") >= 0.2);
  CHECK(neco::metrics::find_family(out, "node_load1") != nullptr);
  CHECK(neco::metrics::find_family(out, "slow_metric") == nullptr);
  CHECK(gate->started == 1);

  // Still running: not started again, reported unsuccessful at once (no wait for it).
  out.clear();
  runner.scrape(out);
  CHECK(gate->started == 1);
  CHECK(value_of(out, "node_scrape_collector_success", "collector", "slow") == 0);

  // Once it finished (its late result dropped), the next scrape runs it again and it succeeds.
  gate->release();
  REQUIRE(neco::testing::wait_for([&] { return gate->finished == 1; }));
  REQUIRE(neco::testing::wait_for([&] {
    out.clear();
    runner.scrape(out);
    return value_of(out, "node_scrape_collector_success", "collector", "slow") == 1;
  }));
  CHECK(gate->started >= 2);
  CHECK(neco::metrics::find_family(out, "slow_metric") != nullptr);
  CHECK(render(out).find("node_scrape_collector_duration_seconds{collector=\"slow\"}") !=
        std::string::npos);
}

namespace {

neco::Expected<ex::ExporterConfig> parse(const std::string& yaml) {
  neco::config::ModuleSection ms{"exporter", YAML::Load(yaml), yaml, {}};
  neco::config::Section section(ms, "role.yaml");
  ex::ExporterConfig c;
  if (auto ok = section.read(ex::exporter_schema(), c); !ok) return std::unexpected(ok.error());
  return c;
}

class FakeContext final : public neco::ModuleContext {
 public:
  boost::asio::any_io_executor executor() override { return io_.get_executor(); }
  neco::WorkerPool& workers() override { std::abort(); }
  neco::metrics::Registry& metrics() override { return registry_; }
  neco::store::Store* store() override { return nullptr; }
  const neco::config::CoreConfig& core() const override { return core_; }
  std::filesystem::path state_dir() const override { return "/nonexistent"; }

 private:
  boost::asio::io_context io_;
  neco::metrics::Registry registry_;
  neco::config::CoreConfig core_;
};

}  // namespace

TEST_CASE("the exporter section: defaults, collector names and exclusions", "[exporter][config]") {
  auto defaults = parse("{}");
  REQUIRE(defaults.has_value());
  CHECK(defaults->collectors.size() == ex::collector_table().size());
  CHECK(defaults->procfs == "/proc");
  CHECK(defaults->collector_timeout == std::chrono::seconds(2));

  auto bad = parse("collectors: [cpu, bogus]");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("unknown collector \"bogus\"") != std::string::npos);
  CHECK(bad.error().message.find("meminfo") != std::string::npos);
  CHECK_FALSE(parse("exclude_collectors: [nope]").has_value());
  CHECK_FALSE(parse("filesystem:\n  fs_types_exclude: \"(\"").has_value());
  CHECK_FALSE(parse("unknown_key: 1").has_value());

  auto some = parse("collectors: [cpu, meminfo, time]\nexclude_collectors: [time]");
  REQUIRE(some.has_value());
  CHECK(ex::enabled_collectors(*some) == std::vector<std::string>{"cpu", "meminfo"});
}

TEST_CASE("the module refuses a mount timeout not shorter than the collector timeout",
          "[exporter][config]") {
  auto module = neco::ModuleRegistry::instance().create("exporter");
  REQUIRE(module.has_value());
  const std::string yaml = "collector_timeout: 1s\nfilesystem:\n  mount_timeout: 1s\n";
  neco::config::ModuleSection ms{"exporter", YAML::Load(yaml), yaml, {}};
  auto r = (*module)->configure(neco::config::Section(ms, "role.yaml"));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("mount_timeout") != std::string::npos);
}

TEST_CASE("the registered module exports into the core registry", "[exporter][module]") {
  auto module = neco::ModuleRegistry::instance().create("exporter");
  REQUIRE(module.has_value());
  const std::string yaml =
      "collectors: [meminfo, loadavg, uname]\nprocfs: " + (kData / "fixtures/proc").string() + "\n";
  neco::config::ModuleSection ms{"exporter", YAML::Load(yaml), yaml, {}};
  REQUIRE((*module)->configure(neco::config::Section(ms, "role.yaml")).has_value());
  FakeContext context;
  REQUIRE((*module)->start(context).has_value());
  CHECK((*module)->health().state == neco::HealthState::healthy);
  CHECK(context.metrics().collector_count() == 1);
  const auto body = neco::metrics::render(context.metrics(), "text/plain").body;
  CHECK(body.find("node_memory_MemTotal_bytes ") != std::string::npos);
  CHECK(body.find("node_uname_info{") != std::string::npos);
  CHECK(body.find("node_scrape_collector_success{collector=\"loadavg\"} 1") != std::string::npos);
  CHECK((*module)->effective_config()["procfs"] == (kData / "fixtures/proc").string());

  // collect[] narrows one scrape to the named collectors; a bad name refuses the scrape.
  using neco::metrics::ScrapeRequest;
  auto only = neco::metrics::render(context.metrics(), "text/plain",
                                    ScrapeRequest{{{"collect[]", "loadavg"}}});
  REQUIRE(only.has_value());
  CHECK(only->body.find("node_load1 ") != std::string::npos);
  CHECK(only->body.find("node_memory_MemTotal_bytes") == std::string::npos);
  CHECK(only->body.find("collector=\"meminfo\"") == std::string::npos);
  auto refused =
      neco::metrics::render(context.metrics(), "text/plain", ScrapeRequest{{{"collect[]", "cpu"}}});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().message.find("disabled collector") != std::string::npos);
  (*module)->stop();
  CHECK(context.metrics().collector_count() == 0);
}

TEST_CASE("collect[] and exclude[] select collectors as node_exporter does", "[exporter]") {
  using neco::metrics::ScrapeRequest;
  const std::vector<std::string> enabled{"cpu", "loadavg", "meminfo"};
  auto select = [&](const ScrapeRequest& r) { return ex::select_collectors(enabled, r); };

  CHECK(select({})->empty());  // no parameters: everything enabled
  CHECK(*select({{{"unrelated", "x"}}}) == std::vector<std::string>{});
  CHECK(*select({{{"collect[]", "meminfo"}, {"collect[]", "cpu"}}}) ==
        std::vector<std::string>{"cpu", "meminfo"});
  CHECK(*select({{{"exclude[]", "cpu"}}}) == std::vector<std::string>{"loadavg", "meminfo"});
  // Excluding everything leaves no collector rather than all of them.
  auto none = select({{{"exclude[]", "cpu"}, {"exclude[]", "loadavg"}, {"exclude[]", "meminfo"}}});
  REQUIRE(none.has_value());
  CHECK(*none == std::vector<std::string>{""});

  auto error_of = [&](ScrapeRequest r) {
    auto s = select(std::move(r));
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == neco::Errc::invalid_argument);
    return s.error().message;
  };
  CHECK_THAT(error_of({{{"collect[]", "nosuch"}}}),
             Catch::Matchers::StartsWith("missing collector: \"nosuch\""));
  CHECK_THAT(error_of({{{"collect[]", ""}}}), Catch::Matchers::StartsWith("missing collector"));
  CHECK_THAT(error_of({{{"exclude[]", "nosuch"}}}),
             Catch::Matchers::StartsWith("missing collector"));
  CHECK_THAT(error_of({{{"collect[]", "uname"}}}),
             Catch::Matchers::StartsWith("disabled collector: \"uname\""));
  CHECK_THAT(error_of({{{"collect[]", "cpu"}, {"exclude[]", "meminfo"}}}),
             Catch::Matchers::Contains("cannot be combined"));
}

TEST_CASE("a scrape limited to some collectors runs and reports only those", "[exporter]") {
  std::vector<std::unique_ptr<ex::Collector>> collectors;
  for (const char* name : {"loadavg", "meminfo"})
    collectors.push_back(ex::find_collector(name)->make({}));
  ex::ScrapeRunner runner(std::move(collectors), fixture_paths(), std::chrono::seconds(2));
  std::vector<MetricFamily> out;
  const std::vector<std::string> only{"meminfo"};
  runner.scrape(out, only);
  const std::string text = render(out);
  CHECK(text.find("node_memory_MemTotal_bytes") != std::string::npos);
  CHECK(text.find("node_load1") == std::string::npos);
  CHECK(text.find("collector=\"loadavg\"") == std::string::npos);
  CHECK(text.find("node_scrape_collector_success{collector=\"meminfo\"} 1") != std::string::npos);
}

TEST_CASE("lanes: a task past its deadline keeps its lane and the batch goes on", "[exporter]") {
  using ex::LanePool;
  using namespace std::chrono_literals;
  struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    void wait() {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return open; });
    }
    void release() {
      std::lock_guard lock(mutex);
      open = true;
      cv.notify_all();
    }
  };
  auto gate = std::make_shared<Gate>();
  auto ran = std::make_shared<std::atomic<int>>(0);
  {
    LanePool pool(2);
    std::vector<std::function<void()>> tasks;
    tasks.emplace_back([ran] { ++*ran; });
    tasks.emplace_back([gate] { gate->wait(); });  // hangs until released
    tasks.emplace_back([ran] { ++*ran; });
    const auto t0 = LanePool::Clock::now();
    auto outcomes = pool.run(std::move(tasks), {.task_timeout = 100ms});
    CHECK(LanePool::Clock::now() - t0 < 1s);
    REQUIRE(outcomes.size() == 3);
    CHECK(outcomes[0] == LanePool::Outcome::done);
    CHECK(outcomes[1] == LanePool::Outcome::timed_out);
    CHECK(outcomes[2] == LanePool::Outcome::done);
    CHECK(*ran == 2);
    CHECK(pool.lanes() == 2);

    // Both lanes taken (one stuck, one free): a batch still runs on the free one, and a
    // second stuck task leaves nothing for the rest.
    std::vector<std::function<void()>> more;
    more.emplace_back([gate] { gate->wait(); });
    more.emplace_back([ran] { ++*ran; });
    outcomes = pool.run(std::move(more), {.task_timeout = 100ms});
    CHECK(outcomes[0] == LanePool::Outcome::timed_out);
    CHECK(outcomes[1] == LanePool::Outcome::not_run);
    CHECK(*ran == 2);

    gate->release();
    REQUIRE(neco::testing::wait_for([&] {
      std::vector<std::function<void()>> probe;
      probe.emplace_back([] {});
      return pool.run(std::move(probe), {})[0] == LanePool::Outcome::done;
    }));
  }
  {
    // A batch deadline ends the batch: running tasks time out, unstarted ones do not run.
    LanePool pool(2);
    auto slow = std::make_shared<Gate>();
    std::vector<std::function<void()>> batch;
    batch.emplace_back([slow] { slow->wait(); });
    batch.emplace_back([slow] { slow->wait(); });
    batch.emplace_back([ran] { ++*ran; });
    auto outcomes = pool.run(std::move(batch),
                             {.batch_deadline = LanePool::Clock::now() + 100ms, .parallel = 2});
    CHECK(outcomes == std::vector<LanePool::Outcome>{LanePool::Outcome::timed_out,
                                                     LanePool::Outcome::timed_out,
                                                     LanePool::Outcome::not_run});
    CHECK(*ran == 2);
    // Destroying the pool with lanes inside tasks does not wait for them.
    const auto t1 = LanePool::Clock::now();
    {
      LanePool doomed(1);
      std::vector<std::function<void()>> hang;
      hang.emplace_back([slow] { slow->wait(); });
      doomed.run(std::move(hang), {.task_timeout = 10ms});
    }
    CHECK(LanePool::Clock::now() - t1 < 1s);
    slow->release();
  }
}

TEST_CASE("cached pseudo files are re-read fresh; other files are not kept", "[exporter]") {
  neco::testing::TempDir dir;
  const auto plain = dir.path() / "plain";
  neco::testing::write_file(plain, "one");
  ex::FileCache cache;
  {
    const ex::FileCacheScope scope(cache);
    const ex::FileCacheScope nested(cache);  // an inner scope changes nothing
    REQUIRE(::prctl(PR_SET_NAME, "neco-cache-a") == 0);
    CHECK(ex::read_file("/proc/thread-self/comm", 4096, false) == "neco-cache-a\n");
    CHECK(ex::read_file(plain, 4096, false) == "one");
    CHECK(cache.size() == 1);  // the procfs file only
    // The same descriptor gives the current content, from its start.
    REQUIRE(::prctl(PR_SET_NAME, "neco-cache-b") == 0);
    CHECK(ex::read_file("/proc/thread-self/comm", 4096, false) == "neco-cache-b\n");
    CHECK(ex::read_file("/proc/thread-self/comm", 4, true) == "neco");
    neco::testing::write_file(plain, "two");
    CHECK(ex::read_file(plain, 4096, false) == "two");
    CHECK(ex::read_file(dir.path() / "missing", 4096, false).error() == ENOENT);
    CHECK(ex::read_file(plain / "x", 4096, false).error() == ENOTDIR);
    CHECK(cache.size() == 1);
  }
  CHECK(cache.size() == 1);
  {
    // A run that no longer reads a file closes it at its end (a device that went away).
    const ex::FileCacheScope scope(cache);
    CHECK(ex::read_file("/proc/self/stat", 4096, false).has_value());
    CHECK(cache.size() == 2);
  }
  CHECK(cache.size() == 1);
  // Without a scope nothing is kept.
  CHECK(ex::read_file("/proc/self/status", 1 << 20, false)->find("Name:") == 0);
  CHECK(cache.size() == 1);
}
