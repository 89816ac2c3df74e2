// The MPI process environment: initialisation and finalisation, world and node-local ranks, and
// agreement on start-up errors so that every rank exits together instead of hanging.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

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

  // The one agreement primitive. Runs `step` on every rank; if it throws on any rank, every rank
  // throws the same eaglet::Error (the lowest failing rank's message, marked all_ranks()).
  // Collective over the world: call it at the same point on every rank. With a timeout, a rank
  // that does not report within it (stuck in a collective, or still working) is not waited for:
  // this rank rethrows its own error, or throws one naming the timeout, and the caller's error
  // path aborts the job: never a hang. Only for start-up and end-of-run work, never per step.
  void agree(const std::function<void()>& step,
             std::chrono::seconds timeout = std::chrono::seconds(0)) const;

  // Element-wise sums over the world of a few host integers, straight over MPI (for tallies that
  // must not trust the communicators they count for).
  std::vector<int64_t> sum(std::vector<int64_t> values) const;
  // Rank 0 receives every rank's `record` (fixed-size text records, rank order); others get {}.
  std::vector<std::string> gather_text(const std::string& record) const;

  // Ends every rank of the job (error path when ranks may be inside a collective).
  [[noreturn]] void abort(int code) const;

 private:
  int64_t rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace eaglet
