// Shared start-up and error policy of the distributed commands.
#include "cli/session.h"

#include <filesystem>
#include <fstream>

#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/device.h"

namespace eaglet::cli {
namespace fs = std::filesystem;

namespace {

// Writes `text` to `path` through a temporary file and a rename, so readers never see half a file.
void write_atomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    EAGLET_CHECK(out.good(), "cannot write {}", tmp.string());
    out << text;
    out.flush();
    EAGLET_CHECK(out.good(), "write to {} failed (disk full?)", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  EAGLET_CHECK(!ec, "cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message());
}

void start(Session& s, const ParsedArgs& args, const std::string& command) {
  const MpiEnv& env = s.env;
  env.agree([&] {
    EAGLET_CHECK(args.has("--config"), "eaglet {}: --config FILE is required", command);
    s.config = load_config(args.get("--config"), args.all("--set"));
    check_valid(s.config, env.size());
  });
  env.agree([&] {
    std::error_code ec;
    fs::create_directories(s.config.output_dir, ec);
    EAGLET_CHECK(!ec, "output_dir={}: cannot create the folder: {}", s.config.output_dir,
                 ec.message());
  });
  // Before anything is written there: a second run on the folder stops here, on every rank.
  env.agree([&] {
    if (env.rank() == 0) s.lock = std::make_unique<io::RunLock>(s.config.output_dir, command);
  });
  env.agree([&] {
    log::init_files(static_cast<int>(env.rank()), s.config.output_dir, s.config.runtime.log_level);
    if (env.rank() == 0)
      write_atomically(fs::path(s.config.output_dir) / "config.yaml", to_yaml(s.config));
  });
  const bool host_collectives = s.config.runtime.collectives == "host";
  env.agree([&] {
    s.device = select_device(s.config.runtime.device, env.local_rank(), env.local_size(),
                             host_collectives);
    EAGLET_CHECK(!(s.config.runtime.collectives == "nccl" && s.device.is_cpu()),
                 "runtime.collectives=nccl: this rank runs on the CPU (no GPU visible)");
    set_threads(s.config.runtime.threads);
  });
  Layout layout{env.size(), s.config.parallel.ulysses, s.config.parallel.ring};
  const bool staged = s.device.is_cuda() && host_collectives;
  spdlog::info("eaglet {}: {} ranks, D={} x U={} x R={}, device {} per rank{}, logs in {}/logs",
               command, env.size(), layout.dp(), layout.ulysses, layout.ring,
               s.device.is_cpu() ? "cpu"
               : staged          ? "cuda:<local rank mod GPUs>"
                                 : "cuda:<local rank>",
               staged ? " (collectives through host memory)" : "", s.config.output_dir);
  spdlog::debug("rank {}: local rank {} of {} (launcher says {}), device {}, SLURM job {}",
                env.rank(), env.local_rank(), env.local_size(),
                env::launcher_local_rank().value_or(-1), device_description(s.device),
                env::slurm_job_id().value_or("none"));
  s.groups = std::make_unique<ProcessGroups>(env, layout, s.device, host_collectives);
  s.watchdog =
      std::make_unique<Watchdog>(env, *s.groups, std::chrono::seconds(s.config.runtime.timeout_s));
}

}  // namespace

std::vector<OptionSpec> session_options() {
  return {{"--config", "FILE", "run configuration (YAML); see configs/reference.yaml"},
          {"--set", "KEY=VALUE", "override one config key, e.g. --set parallel.ring=2", true}};
}

int run_distributed(const ParsedArgs& args, const std::string& command,
                    const std::function<int(Session&)>& body) {
  MpiEnv env(nullptr, nullptr);
  log::init_console(static_cast<int>(env.rank()));
  Session session{env};
  try {
    start(session, args, command);
    int rc = body(session);
    log::flush();
    return rc;
  } catch (const Error& e) {
    if (e.all_ranks()) {
      // Every rank holds this same message: print it once, keep a copy in each rank's log.
      if (env.rank() == 0)
        spdlog::error("{}", e.message());
      else
        spdlog::warn("{}", e.message());
      log::flush();
      return 2;
    }
    spdlog::error("{}", e.what());
  } catch (const std::exception& e) {
    spdlog::error("{} [rank {}]", e.what(), env.rank());
  }
  if (session.groups) session.groups->abort();
  env.abort(1);
}

}  // namespace eaglet::cli
