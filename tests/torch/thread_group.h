// An in-process group of ranks for the tests: N threads, each one rank, behind the Communicator
// interface (dist/communicator.h) over CPU tensors, so that the Ulysses and ring code runs as it
// does under MPI without mpirun. Every operation is built from point-to-point messages.
//
// Contract (the interface's): members call the same operations in the same order. A send copies
// its tensor into the (src, dst) stream and returns; a receive takes a ticket from the (src, dst)
// stream when it is started (send_recv) and waits for that message when it is waited on, so
// messages match in the order receives are started, as MPI's non-overtaking rule matches them.
// CPU tensors only: on CUDA the autograd engine runs every rank's backward on its one device
// thread, where a rank waiting for a peer would block the peer's backward (a deadlock).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/zeros.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"

namespace eaglet::test {

// The shared mailbox: per ordered pair (src, dst) the messages by sequence number.
class ThreadGroup {
 public:
  explicit ThreadGroup(int64_t size) : size_(size) {
    EAGLET_CHECK(size >= 1, "thread group of {} ranks", size);
  }
  int64_t size() const { return size_; }

  void post(int64_t src, int64_t dst, const at::Tensor& t) {
    EAGLET_CHECK(t.is_cpu(), "thread group: CPU tensors only (got {})", t.device().str());
    auto copy = t.detach().clone();  // the sender may reuse or free its buffer at once
    std::lock_guard<std::mutex> lock(mu_);
    auto& s = streams_[{src, dst}];
    s.messages[s.sent++] = std::move(copy);
    cv_.notify_all();
  }
  // The ticket of the next receive on (src, dst), taken when the receive starts.
  int64_t ticket(int64_t src, int64_t dst) {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_[{src, dst}].tickets++;
  }
  // Blocks until message `ticket` of (src, dst) has arrived; throws on abort or after a timeout
  // (a collective missing on a peer would otherwise hang the test run).
  at::Tensor take(int64_t src, int64_t dst, int64_t ticket) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& s = streams_[{src, dst}];
    const bool arrived = cv_.wait_for(lock, std::chrono::seconds(60),
                                      [&] { return aborted_ || s.messages.count(ticket) == 1; });
    EAGLET_CHECK(!aborted_, "thread group: rank {} stopped waiting for rank {}: a peer failed", dst,
                 src);
    EAGLET_CHECK(arrived,
                 "thread group: rank {} waited 60 s for message {} from rank {} (a collective "
                 "missing on a peer?)",
                 dst, ticket, src);
    auto t = std::move(s.messages.at(ticket));
    s.messages.erase(ticket);
    return t;
  }
  void abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  struct Stream {
    int64_t sent = 0, tickets = 0;
    std::map<int64_t, at::Tensor> messages;
  };
  const int64_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<int64_t, int64_t>, Stream> streams_;
  bool aborted_ = false;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int64_t rank)
      : group_(std::move(group)), rank_(rank) {
    for (int64_t r = 0; r < group_->size(); ++r) members_.push_back(r);
  }

  const char* backend() const override { return "threads"; }
  int64_t size() const override { return group_->size(); }
  int64_t rank() const override { return rank_; }
  const std::vector<int64_t>& members() const override { return members_; }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override {
    check_all_to_all_args(*this, in, out);
    const int64_t n = size();
    auto send = in.chunk(n), recv = out.chunk(n);
    for (int64_t j = 0; j < n; ++j) group_->post(rank_, j, send[j]);
    for (int64_t i = 0; i < n; ++i) recv[i].copy_(receive(i));
  }

  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override {
    check_peer(*this, "send_recv", dst);
    check_peer(*this, "send_recv", src);
    group_->post(rank_, dst, send);
    return std::make_unique<Pending>(group_, src, rank_, group_->ticket(src, rank_), recv);
  }

  // Every member reduces the same values in rank order: the results agree bit for bit.
  void all_reduce(const at::Tensor& t, ReduceOp op) override {
    const int64_t n = size();
    for (int64_t j = 0; j < n; ++j)
      if (j != rank_) group_->post(rank_, j, t);
    at::Tensor acc;
    for (int64_t i = 0; i < n; ++i) {
      auto part = i == rank_ ? t.detach().clone() : receive(i);
      acc = !acc.defined() ? part : op == ReduceOp::sum ? acc + part : at::maximum(acc, part);
    }
    t.copy_(acc);
  }

  void broadcast(const at::Tensor& t, int64_t root) override {
    check_peer(*this, "broadcast", root);
    if (rank_ == root) {
      for (int64_t j = 0; j < size(); ++j)
        if (j != root) group_->post(root, j, t);
      return;
    }
    t.copy_(receive(root));
  }

  void barrier() override { all_reduce(at::zeros({1}), ReduceOp::sum); }
  void abort() noexcept override { group_->abort(); }

 private:
  class Pending final : public Work {
   public:
    Pending(std::shared_ptr<ThreadGroup> g, int64_t src, int64_t dst, int64_t ticket,
            at::Tensor recv)
        : g_(std::move(g)), src_(src), dst_(dst), ticket_(ticket), recv_(std::move(recv)) {}
    void wait() override { recv_.copy_(g_->take(src_, dst_, ticket_)); }

   private:
    std::shared_ptr<ThreadGroup> g_;
    int64_t src_, dst_, ticket_;
    at::Tensor recv_;
  };

  at::Tensor receive(int64_t src) { return group_->take(src, rank_, group_->ticket(src, rank_)); }

  std::shared_ptr<ThreadGroup> group_;
  int64_t rank_;
  std::vector<int64_t> members_;
};

// Runs fn(comm) once per rank of a fresh group of n, each rank on its own thread (n = 1: on the
// calling thread). A rank that throws aborts the group, so that peers waiting on it stop too; the
// first exception (the cause, not a peer's "stopped waiting") is rethrown once every thread ended.
template <class Fn>
void run_ranks(int64_t n, Fn&& fn) {
  auto group = std::make_shared<ThreadGroup>(n);
  if (n == 1) {
    ThreadCommunicator comm(group, 0);
    fn(comm);
    return;
  }
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        ThreadCommunicator comm(group, r);
        fn(comm);
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (!first) first = std::current_exception();
        }
        group->abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace eaglet::test
