// Backend-independent parts of the store: key rules, single-object reads and opening the backend
// the config names.
#include "data/store.h"

#include <fmt/format.h>

#include <cstring>

#include "core/error.h"
#include "data/dir_store.h"

#if __has_include("data/mooncake_store.h")
#include "data/mooncake_store.h"
#define EAGLET_HAVE_MOONCAKE_STORE 1
#endif

namespace eaglet::data {

void check_key(const std::string& key) {
  EAGLET_CHECK(!key.empty(), "store key is empty (a key is any non-empty byte string)");
  const size_t nul = key.find('\0');
  if (nul != std::string::npos) {
    // Shown as \0: a NUL would end the message itself where it is read as a C string.
    std::string shown;
    for (char c : key) shown += c == '\0' ? std::string("\\0") : std::string(1, c);
    EAGLET_FAIL(
        "store key '{}': byte {} is NUL, which no backend can store (Mooncake's client and the "
        "dir store's file names take C strings)",
        shown, nul);
  }
}

int64_t Store::get_into(const std::string& key, void* buffer, int64_t capacity) {
  const int64_t n = batch_get_into({key}, {buffer}, {capacity}).at(0);
  EAGLET_CHECK(n != kMissing, "{} store: object {} is missing", backend(), key);
  if (n == kTooLarge)
    EAGLET_FAIL("{} store: object {} has {} bytes, more than the {}-byte buffer", backend(), key,
                size(key), capacity);
  return n;
}

std::vector<int64_t> Store::batch_get_range_into(const std::vector<std::string>& keys,
                                                 const std::vector<int64_t>& offsets,
                                                 const std::vector<int64_t>& lengths,
                                                 const std::vector<void*>& buffers) {
  EAGLET_CHECK(keys.size() == offsets.size() && keys.size() == lengths.size() &&
                   keys.size() == buffers.size(),
               "{} store: batch_get_range_into got {} keys, {} offsets, {} lengths and {} buffers",
               backend(), keys.size(), offsets.size(), lengths.size(), buffers.size());
  std::vector<int64_t> out(keys.size());
  std::vector<char> scratch;
  for (size_t i = 0; i < keys.size(); ++i) {
    EAGLET_CHECK(offsets[i] >= 0 && lengths[i] >= 0, "{} store: object {}: range [{}, +{}) is negative",
                 backend(), keys[i], offsets[i], lengths[i]);
    const int64_t bytes = size(keys[i]);
    if (bytes < 0 || bytes < offsets[i] + lengths[i]) {
      out[i] = bytes;
      continue;
    }
    scratch.resize(static_cast<size_t>(bytes));
    const int64_t got = batch_get_into({keys[i]}, {scratch.data()}, {bytes}).at(0);
    // Replaced in between by a value of another size: report what the read saw.
    if (got == kTooLarge) {
      out[i] = size(keys[i]);
      continue;
    }
    out[i] = got;
    if (got >= offsets[i] + lengths[i])
      std::memcpy(buffers[i], scratch.data() + offsets[i], static_cast<size_t>(lengths[i]));
  }
  return out;
}

std::unique_ptr<Store> open_store(const DataConfig& cfg) {
  if (cfg.store == "dir") return std::make_unique<DirStore>(cfg.path);
  if (cfg.store == "mooncake") {
#ifdef EAGLET_HAVE_MOONCAKE_STORE
    return open_mooncake_store(cfg);
#else
    EAGLET_FAIL(
        "data.store=mooncake: this eaglet was built without the Mooncake store backend "
        "(src/data/mooncake_store.h is absent); use data.store=dir");
#endif
  }
  EAGLET_FAIL("data.store={}: unknown store backend (must be one of dir, mooncake)", cfg.store);
}

}  // namespace eaglet::data
