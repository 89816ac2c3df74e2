// MPI start-up and the error agreement (an all-reduce of the first failing rank, then a broadcast
// of its message).
#include "dist/mpi_env.h"

#include <climits>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "dist/mpi_communicator.h"

namespace eaglet {

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int provided = 0;
  EAGLET_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  // Errors come back as return codes, so they become eaglet::Error with a message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int r = 0, n = 1;
  EAGLET_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  EAGLET_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &n));
  rank_ = r;
  size_ = n;
  set_error_rank(r);
  MPI_Comm node;
  EAGLET_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &node));
  EAGLET_MPI_CHECK(MPI_Comm_rank(node, &r));
  EAGLET_MPI_CHECK(MPI_Comm_size(node, &n));
  local_rank_ = r;
  local_size_ = n;
  MPI_Comm_free(&node);
}

MpiEnv::~MpiEnv() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiEnv::agree(const std::function<void()>& step) const {
  std::string message;
  int failed_rank = INT_MAX;
  try {
    step();
  } catch (const Error& e) {
    message = e.what();
    failed_rank = static_cast<int>(rank_);
  } catch (const std::exception& e) {
    message = fmt::format("{} [rank {}]", e.what(), rank_);
    failed_rank = static_cast<int>(rank_);
  }
  int first = INT_MAX;
  EAGLET_MPI_CHECK(MPI_Allreduce(&failed_rank, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  if (first == INT_MAX) return;
  int len = static_cast<int>(message.size());
  EAGLET_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, first, MPI_COMM_WORLD));
  message.resize(len);
  EAGLET_MPI_CHECK(MPI_Bcast(message.data(), len, MPI_CHAR, first, MPI_COMM_WORLD));
  Error err(message, __FILE__, __LINE__);
  err.set_all_ranks();
  throw err;
}

void MpiEnv::abort(int code) const {
  log::flush();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
}

}  // namespace eaglet
