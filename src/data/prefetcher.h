// Reads the next samples ahead of training on a background thread, so that a step never waits on
// storage while storage keeps up. The thread runs only the communication-free part of the shard
// reader (store reads into pinned host memory on CUDA, copy to the GPU on a side stream, dtype
// conversion); the SP-wide decision (a collective) runs in next(), on the calling thread, in
// stream order, exactly as ShardReader::read would.
//
// Contract: next() is called on the thread that owns the communicators, the same number of times
// on every SP rank. Errors of the background thread (store, manifest timeout) are rethrown by
// next() after the samples fetched before them. The destructor stops and joins the thread; a
// source waiting for manifest lines sees the stop and returns.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "data/manifest.h"
#include "data/sampler.h"
#include "data/shard_reader.h"

namespace eaglet::data {

// A record and its stream position.
struct SampleRef {
  int64_t position = -1;
  ManifestRecord record;
};

// Called on the background thread for the next sample; nullopt ends the stream. `stopped()`
// turns true when the prefetcher is being destroyed: a source that waits must poll it.
using SampleSource = std::function<std::optional<SampleRef>(const std::function<bool()>& stopped)>;

// Replica dp's share of the sampler's stream from `cursor` on (positions cursor + dp,
// cursor + dp + D, ...). Records not yet in the manifest are waited for, polling the file, up to
// `wait` per record (then the source throws naming the manifest). `manifest` and `sampler` must
// outlive the source.
SampleSource replica_source(ManifestReader& manifest, const Sampler& sampler, int64_t dp,
                            int64_t dp_size, int64_t cursor, std::chrono::milliseconds wait);

class Prefetcher {
 public:
  // depth >= 1: how many fetched samples may wait in the queue.
  Prefetcher(ShardReader& reader, SampleSource source, int64_t depth);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next sample after the SP-wide decision (collective over the SP group); nullopt when the
  // source has ended.
  std::optional<ShardSample> next();
  // The next fetched shard without the decision (for callers that run finish() themselves).
  std::optional<FetchedShard> next_fetched();

  // Times next() found nothing ready, and the total time it waited (storage not keeping up).
  int64_t stalls() const { return stalls_; }
  double stall_seconds() const { return stall_seconds_; }

 private:
  void run();
  ShardReader& reader_;
  SampleSource source_;
  int64_t depth_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<FetchedShard> queue_;
  bool stop_ = false, done_ = false;
  std::exception_ptr error_;
  int64_t stalls_ = 0;
  double stall_seconds_ = 0;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace eaglet::data
