// The byte-level object store every sample is read from (DESIGN §2): get into a caller buffer,
// batch get, put, exists, size, remove. Backends: `dir` (embedded, one file per object, atomic
// writes) and `mooncake` (a real Mooncake Store through Mooncake's own client).
//
// Contract: a key is any non-empty byte string without a NUL byte (SGLang-path keys look like
// `ultrachat.v2/conv:7_1a2b3c4d`); each backend maps it to its own namespace without loss (the dir
// store escapes it into a file name, Mooncake takes it as is). Values are raw bytes with no header. A missing object is
// not an exception in the batch read (the caller decides fail or skip); other failures throw
// eaglet::Error naming the backend, the key and what went wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace eaglet::data {

// Result codes of batch_get_into besides a byte count (>= 0).
inline constexpr int64_t kMissing = -1;   // no such object
inline constexpr int64_t kTooLarge = -2;  // the object is larger than the buffer given

class Store {
 public:
  virtual ~Store() = default;
  virtual const char* backend() const = 0;

  // Size in bytes, or kMissing.
  virtual int64_t size(const std::string& key) = 0;
  bool exists(const std::string& key) { return size(key) >= 0; }
  // Reads each object into its buffer; result i is the byte count or kMissing / kTooLarge.
  virtual std::vector<int64_t> batch_get_into(const std::vector<std::string>& keys,
                                              const std::vector<void*>& buffers,
                                              const std::vector<int64_t>& capacities) = 0;
  // One object; throws eaglet::Error naming the key when it is missing or larger than `capacity`.
  int64_t get_into(const std::string& key, void* buffer, int64_t capacity);
  // Stores (or replaces) an object; readers never see a partial value.
  virtual void put(const std::string& key, const void* data, int64_t bytes) = 0;
  // Removes an object; removing a missing object is not an error.
  virtual void remove(const std::string& key) = 0;
  // Reads bytes [offsets[i], offsets[i] + lengths[i]) of each object into its buffer; result i is
  // the object's whole size, or kMissing. The bytes are read only when the object has at least
  // offsets[i] + lengths[i] bytes (the caller compares the size with what it expects). This
  // default reads each object whole into a scratch buffer (Mooncake); the dir store preads.
  virtual std::vector<int64_t> batch_get_range_into(const std::vector<std::string>& keys,
                                                    const std::vector<int64_t>& offsets,
                                                    const std::vector<int64_t>& lengths,
                                                    const std::vector<void*>& buffers);
  // Registers host memory for zero-copy reads (Mooncake); a no-op where not needed.
  virtual void register_buffer(void* /*ptr*/, int64_t /*bytes*/) {}
};

// Checks that a key can be stored: non-empty and without a NUL byte (Mooncake's client and file
// names take C strings). Throws eaglet::Error quoting the key as given otherwise.
void check_key(const std::string& key);

// Opens the store the config names (data.store, data.path, data.mooncake_*).
std::unique_ptr<Store> open_store(const DataConfig& cfg);

}  // namespace eaglet::data
