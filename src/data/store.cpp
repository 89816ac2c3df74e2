// Backend-independent parts of the store: key rules, single-object reads and opening the backend
// the config names.
#include "data/store.h"

#include <fmt/format.h>

#include "core/error.h"
#include "data/dir_store.h"

#if __has_include("data/mooncake_store.h")
#include "data/mooncake_store.h"
#define EAGLET_HAVE_MOONCAKE_STORE 1
#endif

namespace eaglet::data {

namespace {
// Object files of the dir store are named by their key: stay well inside NAME_MAX (255).
constexpr size_t kMaxKeyLength = 200;
}  // namespace

void check_key(const std::string& key) {
  EAGLET_CHECK(!key.empty(), "store key is empty (keys use only [A-Za-z0-9_-])");
  EAGLET_CHECK(key.size() <= kMaxKeyLength, "store key '{}...' is {} characters long (at most {})",
               key.substr(0, 40), key.size(), kMaxKeyLength);
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    EAGLET_CHECK(ok,
                 "store key '{}': character {} ('{}') is not allowed (keys use only [A-Za-z0-9_-])",
                 key, i, c);
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
