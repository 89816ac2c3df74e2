// Helpers for tests that touch files: a temporary folder removed at scope exit, raw file
// writing, the message of an expected eaglet::Error, and running a Python snippet with the
// Python whose PyTorch built eaglet (EAGLET_PYTHON).
#pragma once

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/files.h"

namespace eaglet::test {

// Not std::filesystem: see src/io/files.h.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        eaglet::io::join_path(base && *base ? base : "/tmp", "eaglet_" + tag + "_XXXXXX");
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = buf.data();
  }
  ~TempDir() { eaglet::io::remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const {
    return eaglet::io::join_path(path_, name);
  }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The message of the eaglet::Error `fn` throws, or "" when it throws nothing.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const eaglet::Error& e) {
    return e.what();
  }
  return "";
}

struct ProcessResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output.
inline ProcessResult run_command(const std::string& command) {
  ProcessResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = ::fread(buf, 1, sizeof buf, p)) > 0;) r.output.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Writes `script` into `dir` and runs it with EAGLET_PYTHON and `args` (each single-quoted).
inline ProcessResult run_python(const TempDir& dir, const std::string& script,
                                const std::vector<std::string>& args = {}) {
  const std::string file = dir / "check.py";
  write_bytes(file, script);
  std::string cmd = std::string("'") + EAGLET_PYTHON + "' '" + file + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  return run_command(cmd);
}

}  // namespace eaglet::test
