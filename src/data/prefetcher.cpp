// The prefetch thread: source -> fetch -> place (side stream on CUDA) -> bounded queue.
#include "data/prefetcher.h"

#include <memory>
#include <optional>
#include <vector>

#include "core/error.h"

#ifdef EAGLET_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace eaglet::data {

SampleSource replica_source(ManifestReader& manifest, const Sampler& sampler, int64_t dp,
                            int64_t dp_size, int64_t cursor, std::chrono::milliseconds wait) {
  EAGLET_CHECK(dp >= 0 && dp < dp_size, "replica_source: replica {} of {}", dp, dp_size);
  auto next_position = std::make_shared<int64_t>(Sampler::position(cursor, dp));
  return [&manifest, &sampler, dp_size, wait,
          next_position](const std::function<bool()>& stopped) -> std::optional<SampleRef> {
    const int64_t pos = *next_position;
    if (sampler.total() >= 0 && pos >= sampler.total()) return std::nullopt;
    const int64_t index = sampler.index_at(pos);
    if (manifest.wait_for(index + 1, wait, stopped) <= index) return std::nullopt;  // stopped
    *next_position += dp_size;
    return SampleRef{pos, manifest.at(index)};
  };
}

Prefetcher::Prefetcher(ShardReader& reader, SampleSource source, int64_t depth)
    : reader_(reader), source_(std::move(source)), depth_(depth) {
  EAGLET_CHECK(depth >= 1, "prefetcher: depth {} (must be >= 1)", depth);
  thread_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Prefetcher::run() {
  const ReaderOptions& opt = reader_.options();
  auto stopped = [this] {
    std::lock_guard<std::mutex> lock(mutex_);
    return stop_;
  };
  try {
#ifdef EAGLET_WITH_CUDA
    // Copies and conversions go to a side stream of the run's GPU, off the training stream.
    std::optional<c10::cuda::CUDAGuard> device_guard;
    std::optional<c10::cuda::CUDAStream> side;
    std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
    if (opt.device.is_cuda()) {
      device_guard.emplace(opt.device);
      side.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, opt.device.index()));
      stream_guard.emplace(*side);
    }
#endif
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return stop_ || static_cast<int64_t>(queue_.size()) < depth_; });
        if (stop_) return;
      }
      auto ref = source_(stopped);
      if (!ref) break;
      FetchedShard f = fetch_shard(reader_.store(), ref->record, opt, ref->position);
      place_shard(f, opt);
#ifdef EAGLET_WITH_CUDA
      if (side) {
        auto copied = std::make_shared<at::cuda::CUDAEvent>();
        copied->record(*side);
        std::vector<at::Tensor> used;
        for (const auto* t : {&f.hs, &f.ids, &f.lhs, &f.loss_mask, &f.attention_mask, &f.positions})
          if (t->defined()) used.push_back(*t);
        const auto index = opt.device.index();
        // The consumer's stream waits for the copies, and the caching allocator learns that the
        // side-stream blocks are used there (so they are not reused before that work is done).
        f.ready = [copied, used, index] {
          auto current = c10::cuda::getCurrentCUDAStream(index);
          copied->block(current);
          for (const auto& t : used)
            c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), current);
        };
      }
#endif
      {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(f));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
}

std::optional<FetchedShard> Prefetcher::next_fetched() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (queue_.empty() && !done_) {
    ++stalls_;
    const auto start = std::chrono::steady_clock::now();
    cv_.wait(lock, [this] { return !queue_.empty() || done_; });
    stall_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (!queue_.empty()) {
    FetchedShard f = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    cv_.notify_all();
    return f;
  }
  if (error_) std::rethrow_exception(error_);
  return std::nullopt;
}

std::optional<ShardSample> Prefetcher::next() {
  auto f = next_fetched();
  if (!f) return std::nullopt;
  return reader_.finish(std::move(*f));
}

}  // namespace eaglet::data
