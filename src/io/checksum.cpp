// XXH64 as the xxHash specification defines it (see checksum.h), and file streaming.
#include "io/checksum.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace eaglet::io {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "XXH64 reads little-endian words");

constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full,
                   P3 = 0x165667B19E3779F9ull, P4 = 0x85EBCA77C2B2AE63ull,
                   P5 = 0x27D4EB2F165667C5ull;

uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}
uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t mix_round(uint64_t acc, uint64_t input) {
  return rotl(acc + input * P2, 31) * P1;
}
uint64_t merge_round(uint64_t h, uint64_t lane) {
  return (h ^ mix_round(0, lane)) * P1 + P4;
}
void stripe(uint64_t* lanes, const unsigned char* p) {
  for (int i = 0; i < 4; ++i) lanes[i] = mix_round(lanes[i], read64(p + 8 * i));
}

}  // namespace

void Checksum64::update(const void* data, size_t size) {
  auto p = static_cast<const unsigned char*>(data);
  total_ += size;
  if (buffered_ > 0) {  // complete the stripe a previous call left
    const size_t take = std::min(size, sizeof(buffer_) - buffered_);
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take, p += take, size -= take;
    if (buffered_ < sizeof(buffer_)) return;
    stripe(lanes_, buffer_);
    buffered_ = 0;
  }
  for (; size >= 32; p += 32, size -= 32) stripe(lanes_, p);
  std::memcpy(buffer_, p, size);
  buffered_ = size;
}

uint64_t Checksum64::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
    for (uint64_t lane : lanes_) h = merge_round(h, lane);
  } else {
    h = lanes_[2] + P5;  // the seed (0) + P5
  }
  h += total_;
  const unsigned char* p = buffer_;
  size_t n = buffered_;
  for (; n >= 8; p += 8, n -= 8) h = rotl(h ^ mix_round(0, read64(p)), 27) * P1 + P4;
  if (n >= 4) {
    h = rotl(h ^ (static_cast<uint64_t>(read32(p)) * P1), 23) * P2 + P3;
    p += 4, n -= 4;
  }
  for (; n > 0; ++p, --n) h = rotl(h ^ (*p * P5), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

uint64_t checksum64(const void* data, size_t size) {
  Checksum64 c;
  c.update(data, size);
  return c.digest();
}

uint64_t file_checksum64(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EAGLET_CHECK(fd >= 0, "{}: cannot open to checksum it: {}", path, std::strerror(errno));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<unsigned char> chunk(8 << 20);
  Checksum64 c;
  for (;;) {
    ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      EAGLET_FAIL("{}: read failed while checksumming: {}", path, std::strerror(err));
    }
    if (n == 0) break;
    c.update(chunk.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return c.digest();
}

std::string checksum_hex(uint64_t h) {
  return fmt::format("{:016x}", h);
}

}  // namespace eaglet::io
