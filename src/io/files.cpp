// POSIX implementations of the file-system helpers (see files.h for why not std::filesystem).
#include "io/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace eaglet::io {

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (name.empty()) return dir;
  if (name[0] == '/') return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string strip_trailing_slashes(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string parent_dir(const std::string& path) {
  std::string p = strip_trailing_slashes(path);
  auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  EAGLET_CHECK(d != nullptr, "{}: cannot list folder: {}", dir, std::strerror(errno));
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

void make_dirs(const std::string& dir) {
  std::string p = strip_trailing_slashes(dir);
  if (p.empty() || is_dir(p)) return;
  std::string parent = parent_dir(p);
  if (parent != p) make_dirs(parent);
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    EAGLET_FAIL("{}: cannot create folder: {}", p, std::strerror(errno));
  EAGLET_CHECK(is_dir(p), "{}: exists but is not a folder", p);
}

void remove_tree(const std::string& path) noexcept {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    ::unlink(path.c_str());
    return;
  }
  // Children before their folder (FTW_DEPTH), symlinks removed, not followed (FTW_PHYS).
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        ::remove(p);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  EAGLET_CHECK(::stat(path.c_str(), &st) == 0, "{}: cannot stat: {}", path, std::strerror(errno));
  EAGLET_CHECK(S_ISREG(st.st_mode), "{}: not a regular file", path);
  return static_cast<int64_t>(st.st_size);
}

std::string read_text_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EAGLET_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      EAGLET_FAIL("{}: read failed: {}", path, std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

void rename_path(const std::string& from, const std::string& to) {
  EAGLET_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename {} to {}: {}", from, to,
               std::strerror(errno));
}

bool exchange_paths(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  const int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) return false;
  EAGLET_FAIL("cannot exchange {} and {} (renameat2 RENAME_EXCHANGE): {}", a, b,
              std::strerror(err));
}

void link_file(const std::string& from, const std::string& to) {
  EAGLET_CHECK(::link(from.c_str(), to.c_str()) == 0, "cannot hard-link {} to {}: {}", to, from,
               std::strerror(errno));
}

void fsync_parent_dir(const std::string& path) {
  const std::string dir = parent_dir(path);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EAGLET_CHECK(fd >= 0, "{}: cannot open folder {} to fsync it: {}", path, dir,
               std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  EAGLET_CHECK(rc == 0, "{}: fsync of folder {} failed: {}", path, dir, std::strerror(err));
}

void write_file_synced(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EAGLET_CHECK(fd >= 0, "{}: cannot create: {}", path, std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      EAGLET_FAIL("{}: write failed: {}", path, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  EAGLET_CHECK(rc == 0, "{}: fsync failed: {}", path, std::strerror(err));
}

}  // namespace eaglet::io
