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

bool plain(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lowercase is never written: accepting it would make two names one key
}

// Reads exactly `bytes` at `offset` of an open file; throws naming the object when it shrank.
void pread_all(int fd, char* dst, int64_t bytes, int64_t offset, const std::string& folder,
               const std::string& key) {
  int64_t done = 0;
  while (done < bytes) {
    ssize_t n = ::pread(fd, dst + done, static_cast<size_t>(bytes - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    EAGLET_CHECK(n > 0, "dir store {}: reading object {} failed after {} of {} bytes: {}", folder,
                 key, done, bytes, n < 0 ? std::strerror(errno) : "file shrank");
    done += n;
  }
}

}  // namespace

std::string dir_file_name(const std::string& key) {
  check_key(key);
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size());
  for (const char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    if (plain(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string dir_key_of_file(const std::string& name) {
  std::string key;
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (plain(c)) {
      key += name[i];
      continue;
    }
    const int hi = c == '%' && i + 2 < name.size() ? hex_value(name[i + 1]) : -1;
    const int lo = hi >= 0 ? hex_value(name[i + 2]) : -1;
    EAGLET_CHECK(lo >= 0 && !plain(static_cast<unsigned char>(hi * 16 + lo)),
                 "dir store: file name '{}' is not an escaped key (byte {}: expected [A-Za-z0-9_-] "
                 "or %XX of another byte, XX uppercase hex)",
                 name, i);
    key += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  EAGLET_CHECK(!key.empty(), "dir store: an empty file name is no key");
  return key;
}

DirStore::DirStore(std::string folder) : folder_(std::move(folder)) {
  EAGLET_CHECK(!folder_.empty(), "dir store: data.path is empty (it names the store's folder)");
  try {
    io::make_dirs(folder_);
  } catch (const Error& e) {
    EAGLET_FAIL("dir store (data.path={}): {}", folder_, e.message());
  }
}

std::string DirStore::path_of(const std::string& key) const {
  return io::join_path(folder_, file_name_of(key));
}

std::string DirStore::file_name_of(const std::string& key) const {
  std::string name = dir_file_name(key);
  EAGLET_CHECK(name.size() <= kMaxDirFileName,
               "dir store {}: key '{}' needs a {}-byte file name once escaped (at most {}: "
               "[A-Za-z0-9_-] take one byte, any other byte three); use a shorter key",
               folder_, key, name.size(), kMaxDirFileName);
  return name;
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
    pread_all(f.fd, static_cast<char*>(buffers[i]), bytes, 0, folder_, keys[i]);
    out[i] = bytes;
  }
  return out;
}

std::vector<int64_t> DirStore::batch_get_range_into(const std::vector<std::string>& keys,
                                                    const std::vector<int64_t>& offsets,
                                                    const std::vector<int64_t>& lengths,
                                                    const std::vector<void*>& buffers) {
  EAGLET_CHECK(keys.size() == offsets.size() && keys.size() == lengths.size() &&
                   keys.size() == buffers.size(),
               "dir store {}: batch_get_range_into got {} keys, {} offsets, {} lengths and {} "
               "buffers",
               folder_, keys.size(), offsets.size(), lengths.size(), buffers.size());
  std::vector<int64_t> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EAGLET_CHECK(offsets[i] >= 0 && lengths[i] >= 0,
                 "dir store {}: object {}: range [{}, +{}) is negative", folder_, keys[i],
                 offsets[i], lengths[i]);
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
    out[i] = static_cast<int64_t>(st.st_size);
    if (out[i] >= offsets[i] + lengths[i])
      pread_all(f.fd, static_cast<char*>(buffers[i]), lengths[i], offsets[i], folder_, keys[i]);
  }
  return out;
}

void DirStore::put(const std::string& key, const void* data, int64_t bytes) {
  const std::string name = file_name_of(key), path = io::join_path(folder_, name);
  EAGLET_CHECK(bytes >= 0, "dir store {}: put {} with a negative size {}", folder_, key, bytes);
  // Hidden name starting with '.', which escaped keys never do (dir_file_name writes '.' as %2E):
  // a temporary file is never mistaken for an object, and concurrent writers of one key use
  // distinct temporaries.
  const std::string tmp =
      io::join_path(folder_, fmt::format(".{}.tmp{}-{}", name, ::getpid(),
                                         tmp_counter_.fetch_add(1)));
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
