// The MPI process environment: initialisation and finalisation, world and node-local ranks, and
// agreement on start-up errors so that every rank exits together instead of hanging.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace eaglet {

class MpiEnv {
 public:
  // MPI_Init_thread (FUNNELED: only the main thread calls MPI); works without a launcher too.
  MpiEnv(int* argc, char*** argv);
  ~MpiEnv();  // MPI_Finalize unless aborted
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  int64_t rank() const { return rank_; }
  int64_t size() const { return size_; }
  int64_t local_rank() const { return local_rank_; }  // from MPI's shared-memory split
  int64_t local_size() const { return local_size_; }

  // Runs `step` on every rank; if it throws on any rank, every rank throws the same eaglet::Error
  // (the lowest failing rank's message, marked all_ranks()). Collective over the world: call it
  // at the same point on every rank. Only for start-up work, never per training step.
  void agree(const std::function<void()>& step) const;

  // Ends every rank of the job (error path when ranks may be inside a collective).
  [[noreturn]] void abort(int code) const;

 private:
  int64_t rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace eaglet
