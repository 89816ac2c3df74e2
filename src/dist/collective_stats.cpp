// The counted communicator and its tallies (dist/collective_stats.h).
#include "dist/collective_stats.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <mutex>

#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace eaglet {
namespace {

struct Tally {
  std::atomic<bool> on{false};
  bool timed = false;
  c10::Device device{c10::kCPU};
  std::mutex mu;  // collectives come from the main and autograd's threads
  CollectiveCounts counts;
};

Tally& tally() {
  static Tally t;
  return t;
}

void device_wait() {
#ifdef EAGLET_WITH_CUDA
  if (tally().device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One counted call: its bytes at once, its time (timed) from the device's idle before it to the
// device's idle after it.
class Counting {
 public:
  Counting(Collective kind, const at::Tensor& payload, const Communicator& c)
      : kind_(kind), active_(tally().on.load(std::memory_order_relaxed) && c.size() > 1) {
    if (!active_) return;
    {
      std::lock_guard lock(tally().mu);
      auto& n = tally().counts[static_cast<size_t>(kind_)];
      ++n.calls;
      n.bytes += static_cast<double>(payload.numel() * payload.element_size());
      n.members = c.size();
      n.kind = kind_;
    }
    if (tally().timed) {
      device_wait();
      start_ms_ = now_ms();
    }
  }
  // The time until now (the device waited for) goes to this call.
  void done() {
    if (!active_ || !tally().timed) return;
    device_wait();
    const double ms = now_ms() - start_ms_;
    std::lock_guard lock(tally().mu);
    tally().counts[static_cast<size_t>(kind_)].ms += ms;
    active_ = false;
  }
  bool timed() const { return active_ && tally().timed; }
  ~Counting() { done(); }
  Counting(const Counting&) = delete;
  Counting& operator=(const Counting&) = delete;

 private:
  Collective kind_;
  bool active_;
  double start_ms_ = 0;
};

class CountedCommunicator final : public Communicator {
 public:
  explicit CountedCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  const char* backend() const override { return inner_->backend(); }
  int64_t size() const override { return inner_->size(); }
  int64_t rank() const override { return inner_->rank(); }
  const std::vector<int64_t>& members() const override { return inner_->members(); }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override {
    Counting c(Collective::all_to_all, in, *this);
    inner_->all_to_all(in, out);
  }
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override {
    Counting c(Collective::send_recv, send, *this);
    auto work = inner_->send_recv(send, dst, recv, src);
    if (c.timed()) work->wait();  // timed: the hop's transfer is its time (waiting is idempotent)
    return work;
  }
  void all_reduce(const at::Tensor& t, ReduceOp reduce) override {
    Counting c(Collective::all_reduce, t, *this);
    inner_->all_reduce(t, reduce);
  }
  void broadcast(const at::Tensor& t, int64_t root) override {
    Counting c(Collective::broadcast, t, *this);
    inner_->broadcast(t, root);
  }
  void barrier() override { inner_->barrier(); }
  void abort() noexcept override { inner_->abort(); }
  std::string async_error() const override { return inner_->async_error(); }

 private:
  std::shared_ptr<Communicator> inner_;
};

}  // namespace

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::all_to_all: return "all_to_all";
    case Collective::send_recv: return "send_recv";
    case Collective::all_reduce: return "all_reduce";
    case Collective::broadcast: return "broadcast";
  }
  return "?";
}

double CollectiveCount::bus_gb_per_s() const {
  if (ms <= 0 || members < 2) return 0;
  const double n = static_cast<double>(members), alg = bytes / (ms * 1e-3) / 1e9;
  switch (kind) {
    case Collective::all_reduce: return alg * 2 * (n - 1) / n;
    case Collective::all_to_all: return alg * (n - 1) / n;
    default: return alg;
  }
}

namespace {
std::string bytes_text(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} kB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}
}  // namespace

namespace collectives {

void start(bool timed, c10::Device device) {
  std::lock_guard lock(tally().mu);
  tally().counts = {};
  tally().timed = timed;
  tally().device = device;
  tally().on.store(true, std::memory_order_relaxed);
}

CollectiveCounts stop() {
  tally().on.store(false, std::memory_order_relaxed);
  std::lock_guard lock(tally().mu);
  return tally().counts;
}

std::string text(const CollectiveCounts& counts) {
  std::string out;
  for (auto kind : kAllCollectives) {
    const auto& c = counts[static_cast<size_t>(kind)];
    if (c.calls == 0) continue;
    out += fmt::format("{}{} {} x {}", out.empty() ? "" : "; ", collective_name(kind), c.calls,
                       bytes_text(c.bytes / static_cast<double>(c.calls)));
    if (c.ms > 0) out += fmt::format(" {:.2f} ms (bus {:.3g} GB/s)", c.ms, c.bus_gb_per_s());
  }
  return out.empty() ? "none" : out;
}

}  // namespace collectives

std::shared_ptr<Communicator> counted(std::shared_ptr<Communicator> inner) {
  return std::make_shared<CountedCommunicator>(std::move(inner));
}

}  // namespace eaglet
