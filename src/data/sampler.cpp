// The sample stream: per-epoch seeded permutations and the consumed-samples cursor.
#include "data/sampler.h"

#include <random>

#include "core/error.h"

namespace eaglet::data {

Sampler::Sampler(int64_t num_samples, int64_t num_epochs, int64_t seed, bool shuffle)
    : n_(num_samples), epochs_(num_epochs), seed_(seed), shuffle_(shuffle && num_samples > 0) {
  EAGLET_CHECK(num_samples >= 0, "sampler: {} samples (must be >= 0; 0 = growing manifest)",
               num_samples);
  EAGLET_CHECK(num_samples == 0 || num_epochs >= 1, "sampler: {} epochs (must be >= 1)",
               num_epochs);
}

int64_t Sampler::total() const {
  return n_ == 0 ? -1 : n_ * epochs_;
}

int64_t Sampler::epoch_at(int64_t position) const {
  return n_ == 0 ? 0 : position / n_;
}

std::vector<int64_t> Sampler::permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    // Uniform in [0, i] by rejection (std::uniform_int_distribution differs between libraries).
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = std::mt19937_64::max() - std::mt19937_64::max() % bound;
    uint64_t r;
    do r = rng();
    while (r >= limit);
    std::swap(p[i], p[r % bound]);
  }
  return p;
}

const std::vector<int64_t>& Sampler::epoch_order(int64_t epoch) const {
  if (cached_epoch_ != epoch) {
    cached_ = permutation(n_, static_cast<uint64_t>(seed_ + epoch));
    cached_epoch_ = epoch;
  }
  return cached_;
}

int64_t Sampler::index_at(int64_t position) const {
  EAGLET_CHECK(position >= 0 && (n_ == 0 || position < total()),
               "sampler: stream position {} is outside the stream of {} samples x {} epochs",
               position, n_, epochs_);
  if (n_ == 0) return position;
  if (!shuffle_) return position % n_;
  std::lock_guard<std::mutex> lock(mutex_);
  return epoch_order(position / n_)[static_cast<size_t>(position % n_)];
}

void Sampler::set_cursor(int64_t cursor) {
  EAGLET_CHECK(cursor >= 0 && (n_ == 0 || cursor <= total()),
               "sampler: cursor {} is outside the stream of {} samples x {} epochs (was the "
               "manifest replaced since the checkpoint?)",
               cursor, n_, epochs_);
  cursor_ = cursor;
}

void Sampler::advance(int64_t dp_size) {
  EAGLET_CHECK(dp_size >= 1, "sampler: advance by {} replicas", dp_size);
  cursor_ += dp_size;
}

bool Sampler::exhausted(int64_t dp) const {
  return n_ > 0 && position(cursor_, dp) >= total();
}

}  // namespace eaglet::data
