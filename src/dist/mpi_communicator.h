// Communicator over an MPI communicator, for CPU tensors (tests, small runs, CPU training).
// Blocking collectives on the calling thread; send_recv is non-blocking until Work::wait().
#pragma once

#include <mpi.h>

#include "dist/communicator.h"

namespace eaglet {

// Checks an MPI return code; throws eaglet::Error with the call, MPI's error string and file:line.
#define EAGLET_MPI_CHECK(call)                                              \
  do {                                                                      \
    int eaglet_mpi_rc_ = (call);                                            \
    if (eaglet_mpi_rc_ != MPI_SUCCESS)                                      \
      ::eaglet::throw_mpi_error(#call, eaglet_mpi_rc_, __FILE__, __LINE__); \
  } while (0)
[[noreturn]] void throw_mpi_error(const char* call, int rc, const char* file, int line);

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed in the destructor); `members` are its world ranks in order.
  MpiCommunicator(MPI_Comm comm, std::vector<int64_t> members);
  ~MpiCommunicator() override;

  const char* backend() const override { return "mpi"; }
  int64_t size() const override { return static_cast<int64_t>(members_.size()); }
  int64_t rank() const override { return rank_; }
  const std::vector<int64_t>& members() const override { return members_; }

  void all_to_all(const at::Tensor& in, const at::Tensor& out) override;
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int64_t dst, const at::Tensor& recv,
                                  int64_t src) override;
  void all_reduce(const at::Tensor& t, ReduceOp op) override;
  void broadcast(const at::Tensor& t, int64_t root) override;
  void barrier() override;
  void abort() noexcept override {}  // MPI_Abort on the world ends everything; nothing per group

  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_;
  std::vector<int64_t> members_;
  int64_t rank_ = 0;
};

}  // namespace eaglet
