// Communicator over NCCL for CUDA tensors. MPI only bootstraps it (member 0's unique id is
// broadcast over the members' MPI communicator). Operations run on the communicator's own stream,
// ordered against the caller's current stream with events: no host synchronisation.
#pragma once

#include <c10/core/Device.h>
#include <mpi.h>
#include <nccl.h>

#include <c10/cuda/CUDAStream.h>

#include <atomic>

#include "dist/communicator.h"

namespace eaglet {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`, whose ranks are `members` in order; `device` is this rank's GPU.
  NcclCommunicator(MPI_Comm bootstrap, std::vector<int64_t> members, c10::Device device);
  ~NcclCommunicator() override;

  const char* backend() const override { return "nccl"; }
  int64_t size() const override { return static_cast<int64_t>(members_.size()); }
  int64_t rank() const override { return rank_; }
  const std::vector<int64_t>& members() const override { return members_; }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override;
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override;
  void all_reduce(const at::Tensor& t, ReduceOp op) override;
  void broadcast(const at::Tensor& t, int64_t root) override;
  void barrier() override;
  void abort() noexcept override;
  std::string async_error() const override;

 private:
  // Makes the communicator's stream wait for the caller's current stream; returns the latter.
  c10::cuda::CUDAStream enter(const char* op, std::initializer_list<at::Tensor> tensors);
  // Tells the caching allocator the tensors are in use on our stream, and returns an event
  // recorded on it after the operation.
  void leave(c10::cuda::CUDAStream caller, std::initializer_list<at::Tensor> tensors);

  std::vector<int64_t> members_;
  int64_t rank_ = 0;
  c10::Device device_;
  std::atomic<ncclComm_t> comm_{nullptr};  // the watchdog's thread may abort it
  c10::cuda::CUDAStream stream_;
};

}  // namespace eaglet
