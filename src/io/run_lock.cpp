// Output-folder lock: O_EXCL creation, holder record, dead-holder takeover on the same host.
#include "io/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/files.h"

namespace eaglet::io {
namespace {

std::string host_name() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return host;
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Whether process `pid` of this host exists and is not a zombie (killed, not yet reaped).
bool running(int64_t pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return true;  // no /proc: trust kill()
  const auto close = line.rfind(')');          // "pid (name) S ..."
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

RunLock::RunLock(const std::string& dir, const std::string& command)
    : path_(join_path(dir, "eaglet.lock")) {
  const nlohmann::json me = {{"host", host_name()},
                             {"pid", static_cast<int64_t>(getpid())},
                             {"started", now_text()},
                             {"command", command}};
  mine_ = me.dump();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      const std::string text = mine_ + "\n";
      const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                      ::fsync(fd) == 0;
      ::close(fd);
      EAGLET_CHECK(ok, "output_dir {}: cannot write the lock file {}: {}", dir, path_,
                   std::strerror(errno));
      return;
    }
    EAGLET_CHECK(errno == EEXIST, "output_dir {}: cannot create the lock file {}: {}", dir, path_,
                 std::strerror(errno));
    const std::string text = read_text(path_);
    nlohmann::json holder = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    const bool readable = holder.is_object() && holder.contains("host") && holder.contains("pid");
    const std::string who =
        readable ? fmt::format("eaglet {} (pid {} on host {}, started {})",
                               holder.value("command", "?"), holder["pid"].dump(),
                               holder.value("host", "?"), holder.value("started", "?"))
                 : fmt::format("an unreadable lock ({:?})", text.substr(0, 120));
    const bool here = readable && holder.value("host", "") == host_name();
    const int64_t pid =
        readable && holder["pid"].is_number_integer() ? holder["pid"].get<int64_t>() : 0;
    const bool dead = here && pid > 0 && !running(pid);
    EAGLET_CHECK(dead,
                 "output_dir {} is in use by {}: two runs on one folder would overwrite each "
                 "other's checkpoints and metrics. Use another output_dir, or, if that run is "
                 "gone{}, remove {}",
                 dir, who,
                 here ? "" : " (it is on another host, so it cannot be checked from here)", path_);
    spdlog::warn("output_dir {}: taking over the lock of {}, which no longer runs", dir, who);
    ::unlink(path_.c_str());
  }
  EAGLET_FAIL("output_dir {}: another run took the lock {} while this one took it over", dir,
              path_);
}

RunLock::~RunLock() {
  if (read_text(path_) == mine_ + "\n") ::unlink(path_.c_str());
}

}  // namespace eaglet::io
