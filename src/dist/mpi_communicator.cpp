// MPI implementation of the communicator: maps dtypes to MPI datatypes; 16-bit floats travel as
// raw 16-bit words and are reduced in fp32, since MPI has no bf16/fp16 arithmetic.
#include "dist/mpi_communicator.h"

#include <ATen/ops/empty_like.h>

#include <climits>

#include "core/error.h"
#include "core/tensor_text.h"

namespace eaglet {

void throw_mpi_error(const char* call, int rc, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw_error(file, line, fmt::format("MPI call {} failed: {}", call, std::string(text, len)));
}

namespace {

MPI_Datatype mpi_type(const Communicator& c, const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kByte:
    case at::kBool:
      return MPI_UINT8_T;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;  // moved as words; never reduced as such
    default:
      EAGLET_FAIL("{} {}: dtype of {} is not supported", c.backend(), op, tensor_text(t));
  }
}

void check_cpu(const Communicator& c, const char* op, const at::Tensor& t) {
  EAGLET_CHECK(t.device().is_cpu(),
               "{} {}: needs CPU tensors, got {} (CUDA tensors use the NCCL backend)", c.backend(),
               op, tensor_text(t));
  EAGLET_CHECK(t.is_contiguous(), "{} {}: tensor {} must be contiguous", c.backend(), op,
               tensor_text(t));
}

int count_of(const Communicator& c, const char* op, int64_t n) {
  EAGLET_CHECK(n <= INT_MAX,
               "{} {}: {} elements exceed MPI's int count; use the GPU path for this size",
               c.backend(), op, n);
  return static_cast<int>(n);
}

// Holds both tensors until the requests complete: a caller may drop its own handles (a
// temporary contiguous copy, say) before wait(), and MPI reads and writes them until then.
class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request send, MPI_Request recv, at::Tensor send_buf, at::Tensor recv_buf)
      : reqs_{send, recv}, bufs_{std::move(send_buf), std::move(recv_buf)} {}
  ~MpiWork() override {
    // A Work dropped without wait() still must not leave requests writing into freed memory.
    if (!done_) MPI_Waitall(2, reqs_, MPI_STATUSES_IGNORE);
  }
  void wait() override {
    if (done_) return;
    done_ = true;
    EAGLET_MPI_CHECK(MPI_Waitall(2, reqs_, MPI_STATUSES_IGNORE));
    bufs_[0] = bufs_[1] = at::Tensor();
  }

 private:
  MPI_Request reqs_[2];
  at::Tensor bufs_[2];
  bool done_ = false;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::vector<int64_t> members)
    : comm_(comm), members_(std::move(members)) {
  int r = 0, n = 0;
  EAGLET_MPI_CHECK(MPI_Comm_rank(comm_, &r));
  EAGLET_MPI_CHECK(MPI_Comm_size(comm_, &n));
  EAGLET_CHECK(n == size(), "mpi: communicator has {} ranks, layout says {}", n, size());
  rank_ = r;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_to_all(const at::Tensor& in, const at::Tensor& out) {
  check_all_to_all_args(*this, in, out);
  check_cpu(*this, "all_to_all", in);
  check_cpu(*this, "all_to_all", out);
  int chunk = count_of(*this, "all_to_all", in.numel() / size());
  auto type = mpi_type(*this, "all_to_all", in);
  EAGLET_MPI_CHECK(MPI_Alltoall(in.data_ptr(), chunk, type, out.data_ptr(), chunk, type, comm_));
}

std::unique_ptr<Work> MpiCommunicator::send_recv(const at::Tensor& send, int64_t dst,
                                                 const at::Tensor& recv, int64_t src) {
  check_peer(*this, "send_recv", dst);
  check_peer(*this, "send_recv", src);
  check_cpu(*this, "send_recv", send);
  check_cpu(*this, "send_recv", recv);
  EAGLET_CHECK(send.scalar_type() == recv.scalar_type(),
               "mpi send_recv: send {} and recv {} differ in dtype", tensor_text(send),
               tensor_text(recv));
  constexpr int kTag = 7;
  MPI_Request reqs[2];
  EAGLET_MPI_CHECK(MPI_Irecv(recv.data_ptr(), count_of(*this, "send_recv", recv.numel()),
                             mpi_type(*this, "send_recv", recv), static_cast<int>(src), kTag, comm_,
                             &reqs[1]));
  EAGLET_MPI_CHECK(MPI_Isend(send.data_ptr(), count_of(*this, "send_recv", send.numel()),
                             mpi_type(*this, "send_recv", send), static_cast<int>(dst), kTag, comm_,
                             &reqs[0]));
  return std::make_unique<MpiWork>(reqs[0], reqs[1], send, recv);
}

void MpiCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  check_cpu(*this, "all_reduce", t);
  if (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf) {
    at::Tensor wide = t.to(at::kFloat);
    all_reduce(wide, op);
    t.copy_(wide);
    return;
  }
  EAGLET_CHECK(!(t.scalar_type() == at::kBool && op == ReduceOp::sum),
               "mpi all_reduce: sum of a bool tensor {} is not defined; use max (logical or)",
               tensor_text(t));
  MPI_Op mop = op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
  EAGLET_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(),
                                 count_of(*this, "all_reduce", t.numel()),
                                 mpi_type(*this, "all_reduce", t), mop, comm_));
}

void MpiCommunicator::broadcast(const at::Tensor& t, int64_t root) {
  check_peer(*this, "broadcast", root);
  check_cpu(*this, "broadcast", t);
  EAGLET_MPI_CHECK(MPI_Bcast(t.data_ptr(), count_of(*this, "broadcast", t.numel()),
                             mpi_type(*this, "broadcast", t), static_cast<int>(root), comm_));
}

void MpiCommunicator::barrier() {
  EAGLET_MPI_CHECK(MPI_Barrier(comm_));
}

}  // namespace eaglet
