// Which sample each data-parallel replica reads (DESIGN §1): one global stream of manifest indices,
// the same on every rank and independent of the DP size D; stream position j goes to replica
// dp = j % D. A fixed manifest of N samples is read for a number of epochs, each shuffled by
// seed + epoch; a growing manifest (N unknown) is read once in manifest order.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace eaglet::data {

class Sampler {
 public:
  // num_samples = N > 0 with num_epochs >= 1 for a fixed manifest; num_samples = 0 for a growing
  // one (unbounded stream, manifest order, shuffle ignored).
  Sampler(int64_t num_samples, int64_t num_epochs, int64_t seed, bool shuffle);

  int64_t num_samples() const { return n_; }
  // Stream length N · epochs, or -1 when unbounded.
  int64_t total() const;
  bool unbounded() const { return n_ == 0; }
  // Manifest index of stream position j: perm_{seed+epoch}[j % N] with epoch = j / N (identity
  // without shuffle or when unbounded). Thread-safe.
  int64_t index_at(int64_t position) const;
  int64_t epoch_at(int64_t position) const;

  // The cursor counts the stream positions consumed by all replicas together. A round reads
  // positions [cursor, cursor + D): replica dp reads cursor + dp. Saving the cursor and restoring
  // it under another D continues the same stream without skipping or repeating a sample.
  int64_t cursor() const { return cursor_; }
  void set_cursor(int64_t cursor);
  static int64_t position(int64_t cursor, int64_t dp) { return cursor + dp; }
  void advance(int64_t dp_size);  // cursor += D
  // True when the round at the cursor has no sample left for replica dp.
  bool exhausted(int64_t dp) const;

  // The permutation of epoch e (N entries); the plain Fisher-Yates with a portable generator
  // (std::mt19937_64 and rejection sampling), so every platform gets the same order.
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed);

 private:
  const std::vector<int64_t>& epoch_order(int64_t epoch) const;
  int64_t n_, epochs_, seed_;
  bool shuffle_;
  int64_t cursor_ = 0;
  mutable std::mutex mutex_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_;
};

}  // namespace eaglet::data
