// The progress record (lock-free atomics, written by the main loop and by every communicator
// operation), the watched communicator, and the watchdog thread that reads the record.
#include "dist/watchdog.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "core/log.h"
#include "dist/mpi_env.h"
#include "dist/process_groups.h"

namespace eaglet {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Fields are read one by one: a report may mix two neighbouring marks, which is harmless.
struct Record {
  std::atomic<int64_t> mark_ns{now_ns()};  // last progress
  std::atomic<const char*> phase{"start-up"};
  std::atomic<int64_t> step{-1}, micro{-1}, allow_s{0};
  std::atomic<const char*> op{nullptr};  // the communicator operation under way, if any
  std::atomic<const char*> group{nullptr};
  std::atomic<const Communicator*> comm{nullptr};
  std::atomic<int64_t> op_since_ns{0};
};

Record& record() {
  static Record r;
  return r;
}

// Marks an operation's start and end as progress; while it runs, the record names it.
class InOperation {
 public:
  InOperation(const char* op, const char* group, const Communicator& c) {
    auto& r = record();
    const int64_t t = now_ns();
    r.group = group;
    r.comm = &c;
    r.op_since_ns = t;
    r.op = op;
    r.mark_ns = t;
  }
  ~InOperation() {
    auto& r = record();
    r.op = nullptr;
    r.mark_ns = now_ns();
  }
  InOperation(const InOperation&) = delete;
  InOperation& operator=(const InOperation&) = delete;
};

class WatchedWork final : public Work {
 public:
  WatchedWork(std::unique_ptr<Work> inner, const char* group, const Communicator& c)
      : inner_(std::move(inner)), group_(group), comm_(c) {}
  void wait() override {
    InOperation in("send_recv (ring step) wait", group_, comm_);
    inner_->wait();
  }

 private:
  std::unique_ptr<Work> inner_;
  const char* group_;
  const Communicator& comm_;
};

class WatchedCommunicator final : public Communicator {
 public:
  WatchedCommunicator(std::shared_ptr<Communicator> inner, const char* group)
      : inner_(std::move(inner)), group_(group) {}

  const char* backend() const override { return inner_->backend(); }
  int64_t size() const override { return inner_->size(); }
  int64_t rank() const override { return inner_->rank(); }
  const std::vector<int64_t>& members() const override { return inner_->members(); }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override {
    InOperation op("all_to_all", group_, *this);
    inner_->all_to_all(in, out);
  }
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override {
    InOperation op("send_recv (ring step)", group_, *this);
    return std::make_unique<WatchedWork>(inner_->send_recv(send, dst, recv, src), group_, *this);
  }
  void all_reduce(const at::Tensor& t, ReduceOp reduce) override {
    InOperation op("all_reduce", group_, *this);
    inner_->all_reduce(t, reduce);
  }
  void broadcast(const at::Tensor& t, int64_t root) override {
    InOperation op("broadcast", group_, *this);
    inner_->broadcast(t, root);
  }
  void barrier() override {
    InOperation op("barrier", group_, *this);
    inner_->barrier();
  }
  void abort() noexcept override { inner_->abort(); }
  std::string async_error() const override { return inner_->async_error(); }

 private:
  std::shared_ptr<Communicator> inner_;
  const char* group_;
};

std::string ranks_text(const std::vector<int64_t>& members) {
  std::string out;
  for (int64_t m : members) out += fmt::format("{}{}", out.empty() ? "" : ",", m);
  return out;
}

}  // namespace

namespace watch {

void phase(const char* what, int64_t step, int64_t micro, int64_t allow_s) {
  auto& r = record();
  r.step = step;
  r.micro = micro;
  r.allow_s = allow_s;
  r.phase = what;
  r.mark_ns = now_ns();
}

std::shared_ptr<Communicator> watched(std::shared_ptr<Communicator> inner, const char* group) {
  return std::make_shared<WatchedCommunicator>(std::move(inner), group);
}

}  // namespace watch

std::string Watchdog::where() {
  const auto& r = record();
  const int64_t t = now_ns();
  std::string out = r.step.load() >= 0 ? fmt::format("step {}, ", r.step.load()) : "";
  out += fmt::format("phase '{}'", r.phase.load());
  if (r.micro.load() >= 0) out += fmt::format(" (micro-batch {})", r.micro.load());
  if (const char* op = r.op.load()) {
    const Communicator* c = r.comm.load();
    out += fmt::format(", waiting in {} on group {} (world ranks {}) for {} s", op, r.group.load(),
                       c ? ranks_text(c->members()) : "?", (t - r.op_since_ns.load()) / 1000000000);
  } else {
    out += ", not in a collective";
  }
  return out;
}

Watchdog::Watchdog(const MpiEnv& env, ProcessGroups& groups, std::chrono::seconds timeout)
    : env_(env), groups_(groups), timeout_(timeout) {
  if (timeout_.count() <= 0) return;
  record().mark_ns = now_ns();
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  int64_t last_poll = now_ns();
  while (!wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
    const int64_t t = now_ns();
    if (t - last_poll > 5000000000) {  // this process itself was stopped (SIGSTOP, a debugger)
      spdlog::warn("watchdog: this rank was suspended for {} s", (t - last_poll) / 1000000000);
      record().mark_ns = t;
    }
    last_poll = t;
    const auto error = groups_.async_error();
    if (!error.empty())
      fire(fmt::format("a communicator reports an asynchronous error: {}", error));
    const auto& r = record();
    const int64_t silent_s = (now_ns() - r.mark_ns.load()) / 1000000000;
    const int64_t limit =
        r.op.load() ? timeout_.count() : std::max(timeout_.count(), r.allow_s.load());
    if (silent_s >= limit)
      fire(
          fmt::format("no progress for {} s (runtime.timeout_s={}): a peer is stopped, dead or "
                      "much slower",
                      silent_s, timeout_.count()));
  }
}

void Watchdog::fire(const std::string& why) {
  spdlog::error("watchdog: rank {}: {}; at {}. Ending the job in {} s (exit 1).", env_.rank(), why,
                where(), kGrace.count());
  log::flush();
  // The other live ranks stopped at about the same moment: let them write their reports.
  std::this_thread::sleep_for(kGrace);
  groups_.abort();
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    ::_exit(1);
  }).detach();
  env_.abort(1);
}

}  // namespace eaglet
