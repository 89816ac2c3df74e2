// MPI start-up and the error agreement (an all-reduce of the first failing rank, then a broadcast
// of its message).
#include "dist/mpi_env.h"

#include <climits>
#include <cstdlib>
#include <thread>
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

void MpiEnv::agree(const std::function<void()>& step, std::chrono::seconds timeout) const {
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
  if (timeout.count() <= 0) {
    EAGLET_MPI_CHECK(MPI_Allreduce(&failed_rank, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  } else {
    MPI_Request req;
    EAGLET_MPI_CHECK(
        MPI_Iallreduce(&failed_rank, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int done = 0;;) {
      EAGLET_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) break;
      if (std::chrono::steady_clock::now() > deadline) {
        if (!message.empty()) throw Error(message, __FILE__, __LINE__);
        EAGLET_FAIL("other ranks did not finish within {} s", timeout.count());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (first == INT_MAX) return;
  int len = static_cast<int>(message.size());
  EAGLET_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, first, MPI_COMM_WORLD));
  message.resize(len);
  EAGLET_MPI_CHECK(MPI_Bcast(message.data(), len, MPI_CHAR, first, MPI_COMM_WORLD));
  Error err(message, __FILE__, __LINE__);
  err.set_all_ranks();
  throw err;
}

std::vector<int64_t> MpiEnv::sum(std::vector<int64_t> values) const {
  EAGLET_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()),
                                 MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
  return values;
}

std::vector<std::string> MpiEnv::gather_text(const std::string& record) const {
  constexpr int kRecord = 256;
  std::vector<char> mine(kRecord, '\0');
  record.copy(mine.data(), kRecord - 1);
  std::vector<char> all(rank_ == 0 ? kRecord * size_ : 0);
  EAGLET_MPI_CHECK(
      MPI_Gather(mine.data(), kRecord, MPI_CHAR, all.data(), kRecord, MPI_CHAR, 0, MPI_COMM_WORLD));
  std::vector<std::string> out;
  for (int64_t r = 0; r < static_cast<int64_t>(all.size()) / kRecord; ++r)
    out.emplace_back(all.data() + r * kRecord);
  return out;
}

void MpiEnv::abort(int code) const {
  log::flush();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
}

}  // namespace eaglet
