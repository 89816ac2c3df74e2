// The dir store: POSIX open/pread/write/fsync/rename (no std::filesystem: see io/files.h).
#include "data/dir_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/files.h"

namespace eaglet::data {
namespace {

// Closes a descriptor on every path out of a function.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

DirStore::DirStore(std::string folder) : folder_(std::move(folder)) {
  EAGLET_CHECK(!folder_.empty(), "dir store: data.path is empty (it names the store's folder)");
  try {
    io::make_dirs(folder_);
  } catch (const Error& e) {
    EAGLET_FAIL("dir store (data.path={}): {}", folder_, e.message());
  }
}

std::string DirStore::path_of(const std::string& key) const {
  check_key(key);
  return io::join_path(folder_, key);
}

int64_t DirStore::size(const std::string& key) {
  const std::string path = path_of(key);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    EAGLET_CHECK(errno == ENOENT || errno == ENOTDIR, "dir store {}: cannot stat object {}: {}",
                 folder_, key, std::strerror(errno));
    return kMissing;
  }
  EAGLET_CHECK(S_ISREG(st.st_mode), "dir store {}: object {} ({}) is not a regular file", folder_,
               key, path);
  return static_cast<int64_t>(st.st_size);
}

std::vector<int64_t> DirStore::batch_get_into(const std::vector<std::string>& keys,
                                              const std::vector<void*>& buffers,
                                              const std::vector<int64_t>& capacities) {
  EAGLET_CHECK(keys.size() == buffers.size() && keys.size() == capacities.size(),
               "dir store {}: batch_get_into got {} keys, {} buffers and {} capacities", folder_,
               keys.size(), buffers.size(), capacities.size());
  std::vector<int64_t> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string path = path_of(keys[i]);
    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (f.fd < 0) {
      EAGLET_CHECK(errno == ENOENT || errno == ENOTDIR, "dir store {}: cannot open object {}: {}",
                   folder_, keys[i], std::strerror(errno));
      out[i] = kMissing;
      continue;
    }
    struct stat st {};
    EAGLET_CHECK(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode),
                 "dir store {}: object {} is not a readable regular file", folder_, keys[i]);
    const int64_t bytes = st.st_size;
    if (bytes > capacities[i]) {
      out[i] = kTooLarge;
      continue;
    }
    // The file is never rewritten in place (puts rename a new file over it), so its size holds.
    int64_t done = 0;
    auto* dst = static_cast<char*>(buffers[i]);
    while (done < bytes) {
      ssize_t n = ::pread(f.fd, dst + done, static_cast<size_t>(bytes - done), done);
      if (n < 0 && errno == EINTR) continue;
      EAGLET_CHECK(n > 0, "dir store {}: reading object {} failed after {} of {} bytes: {}",
                   folder_, keys[i], done, bytes, n < 0 ? std::strerror(errno) : "file shrank");
      done += n;
    }
    out[i] = bytes;
  }
  return out;
}

void DirStore::put(const std::string& key, const void* data, int64_t bytes) {
  const std::string path = path_of(key);
  EAGLET_CHECK(bytes >= 0, "dir store {}: put {} with a negative size {}", folder_, key, bytes);
  // Hidden name with a '.', which keys never contain: a temporary file is never mistaken for an
  // object, and concurrent writers of one key use distinct temporaries.
  const std::string tmp = io::join_path(
      folder_, fmt::format(".{}.tmp{}-{}", key, ::getpid(), tmp_counter_.fetch_add(1)));
  auto fail = [&](const char* what) {
    int err = errno;
    ::unlink(tmp.c_str());
    EAGLET_FAIL("dir store {}: put {} ({} bytes): {} failed: {}", folder_, key, bytes, what,
                std::strerror(err));
  };
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (f.fd < 0) fail("creating a temporary file");
    int64_t done = 0;
    const auto* src = static_cast<const char*>(data);
    while (done < bytes) {
      ssize_t n = ::write(f.fd, src + done, static_cast<size_t>(bytes - done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("write");
      done += n;
    }
    if (::fsync(f.fd) != 0) fail("fsync");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  io::fsync_parent_dir(path);
}

void DirStore::remove(const std::string& key) {
  const std::string path = path_of(key);
  if (::unlink(path.c_str()) != 0)
    EAGLET_CHECK(errno == ENOENT, "dir store {}: cannot remove object {}: {}", folder_, key,
                 std::strerror(errno));
}

}  // namespace eaglet::data
