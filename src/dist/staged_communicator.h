// A communicator for device tensors over a host one (runtime.collectives: host): every operation
// copies its tensors to host memory, runs there (MPI) and copies the results back. Slow (each
// operation waits for the device), but it needs neither NCCL nor one GPU per rank: several ranks
// may share a GPU, so a layout can be checked on a machine with fewer GPUs than ranks. Same
// contract as Communicator; everything completes before return (send_recv: at wait()).
#pragma once

#include <memory>

#include "dist/communicator.h"

namespace eaglet {

class StagedCommunicator final : public Communicator {
 public:
  explicit StagedCommunicator(std::shared_ptr<Communicator> host) : host_(std::move(host)) {}

  const char* backend() const override { return "mpi (host-staged)"; }
  int64_t size() const override { return host_->size(); }
  int64_t rank() const override { return host_->rank(); }
  const std::vector<int64_t>& members() const override { return host_->members(); }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override;
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override;
  void all_reduce(const at::Tensor& t, ReduceOp op) override;
  void broadcast(const at::Tensor& t, int64_t root) override;
  void barrier() override { host_->barrier(); }
  void abort() noexcept override { host_->abort(); }

 private:
  std::shared_ptr<Communicator> host_;
};

}  // namespace eaglet
