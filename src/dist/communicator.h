// The communicator interface every parallel algorithm talks to, over MPI (CPU tensors) or NCCL
// (CUDA tensors), so that the calling code is the same on both.
//
// Contract (as in c10d): all members of a group call the same operations in the same order, with
// tensors of the same shape and dtype. On CUDA, an operation is enqueued on the communicator's own
// stream after everything already enqueued on the caller's current stream, and its results are
// ready for whatever the caller enqueues afterwards on that stream: no host synchronisation. On the
// CPU an operation has completed when it returns (send_recv: when its Work is waited on).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace eaglet {

enum class ReduceOp { sum, max };

// A started send/recv pair. wait() makes the results visible to the caller: the current CUDA
// stream waits on the transfer (no host sync), or the CPU blocks until the MPI requests finish.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const char* backend() const = 0;
  virtual int64_t size() const = 0;
  virtual int64_t rank() const = 0;  // rank inside this group
  // World ranks of the members, ordered by rank in the group.
  virtual const std::vector<int64_t>& members() const = 0;

  // Equal splits along dim 0: chunk j of `in` goes to member j, chunk i of `out` comes from
  // member i. Both contiguous, same shape, dim 0 divisible by size().
  virtual void all_to_all(const at::Tensor& in, const at::Tensor& out) = 0;
  // Sends `send` to member dst and receives `recv` from member src (the ring step); started now,
  // finished by the returned Work's wait().
  virtual std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst,
                                          const at::Tensor& recv, int64_t src) = 0;
  // In place over all members.
  virtual void all_reduce(const at::Tensor& t, ReduceOp op) = 0;
  virtual void broadcast(const at::Tensor& t, int64_t root) = 0;
  // Returns once every member has reached it and this member's earlier operations are complete.
  virtual void barrier() = 0;
  // Tears the communicator down without waiting for peers (error path only).
  virtual void abort() noexcept = 0;
  // An error the backend raised outside any call (NCCL's asynchronous errors), or "". Safe to call
  // from another thread (the watchdog's).
  virtual std::string async_error() const { return {}; }
};

// One host value reduced over a group's members (a CPU tensor through c: pass a host group).
double all_reduce_scalar(Communicator& c, double value, ReduceOp op);

// Checks shared by both backends; throws eaglet::Error naming the backend and the operation.
void check_all_to_all_args(const Communicator& c, const at::Tensor& in, const at::Tensor& out);
void check_peer(const Communicator& c, const char* op, int64_t peer);

}  // namespace eaglet
