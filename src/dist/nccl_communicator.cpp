// NCCL implementation of the communicator: grouped send/recv for all-to-all and the ring step,
// native collectives otherwise; every call checked, errors name the operation and NCCL's reason.
#include "dist/nccl_communicator.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/mpi_communicator.h"

namespace eaglet {
namespace {

#define EAGLET_NCCL_CHECK(call, comm)                                                         \
  do {                                                                                        \
    ncclResult_t eaglet_nccl_rc_ = (call);                                                    \
    if (eaglet_nccl_rc_ != ncclSuccess)                                                       \
      EAGLET_FAIL("NCCL call {} failed: {} ({})", #call, ncclGetErrorString(eaglet_nccl_rc_), \
                  (comm) ? ncclGetLastError(comm) : "");                                      \
  } while (0)

ncclDataType_t nccl_type(const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kChar:
      return ncclInt8;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    default:
      EAGLET_FAIL("nccl {}: dtype of {} is not supported", op, tensor_text(t));
  }
}

class NcclWork final : public Work {
 public:
  NcclWork(at::cuda::CUDAEvent event, c10::Device device)
      : event_(std::move(event)), device_(device) {}
  void wait() override { event_.block(c10::cuda::getCurrentCUDAStream(device_.index())); }

 private:
  at::cuda::CUDAEvent event_;
  c10::Device device_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm bootstrap, std::vector<int64_t> members,
                                   c10::Device device)
    : members_(std::move(members)),
      device_(device),
      stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {
  EAGLET_CHECK(device.is_cuda(), "nccl: device {} is not a CUDA device", device.str());
  int r = 0;
  EAGLET_MPI_CHECK(MPI_Comm_rank(bootstrap, &r));
  rank_ = r;
  ncclUniqueId id;
  if (rank_ == 0) EAGLET_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
  EAGLET_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap));
  c10::cuda::CUDAGuard guard(device_);
  ncclComm_t comm = nullptr;
  EAGLET_NCCL_CHECK(ncclCommInitRank(&comm, static_cast<int>(size()), id, static_cast<int>(rank_)),
                    nullptr);
  comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
  if (ncclComm_t c = comm_.exchange(nullptr)) ncclCommDestroy(c);
}

void NcclCommunicator::abort() noexcept {
  if (ncclComm_t c = comm_.exchange(nullptr)) ncclCommAbort(c);
}

std::string NcclCommunicator::async_error() const {
  ncclComm_t c = comm_;
  ncclResult_t state = ncclSuccess;
  if (c == nullptr || ncclCommGetAsyncError(c, &state) != ncclSuccess) return {};
  if (state == ncclSuccess || state == ncclInProgress) return {};
  return fmt::format("nccl: {} ({})", ncclGetErrorString(state), ncclGetLastError(c));
}

c10::cuda::CUDAStream NcclCommunicator::enter(const char* op,
                                              std::initializer_list<at::Tensor> tensors) {
  EAGLET_CHECK(comm_ != nullptr, "nccl {}: communicator was aborted", op);
  for (const auto& t : tensors) {
    EAGLET_CHECK(t.device() == device_, "nccl {}: tensor {} is not on this rank's device {}", op,
                 tensor_text(t), device_.str());
    EAGLET_CHECK(t.is_contiguous(), "nccl {}: tensor {} must be contiguous", op, tensor_text(t));
  }
  auto caller = c10::cuda::getCurrentCUDAStream(device_.index());
  at::cuda::CUDAEvent ready;
  ready.record(caller);
  ready.block(stream_);
  return caller;
}

void NcclCommunicator::leave(c10::cuda::CUDAStream caller,
                             std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors)
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_);
  at::cuda::CUDAEvent done;
  done.record(stream_);
  done.block(caller);
}

void NcclCommunicator::all_to_all(const at::Tensor& in, const at::Tensor& out) {
  check_all_to_all_args(*this, in, out);
  auto caller = enter("all_to_all", {in, out});
  c10::cuda::CUDAGuard guard(device_);
  auto type = nccl_type("all_to_all", in);
  size_t count = in.numel() / size();
  size_t bytes = count * in.element_size();
  auto* src = static_cast<const char*>(in.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  EAGLET_NCCL_CHECK(ncclGroupStart(), comm_);
  for (int p = 0; p < size(); ++p) {
    EAGLET_NCCL_CHECK(ncclSend(src + p * bytes, count, type, p, comm_, stream_), comm_);
    EAGLET_NCCL_CHECK(ncclRecv(dst + p * bytes, count, type, p, comm_, stream_), comm_);
  }
  EAGLET_NCCL_CHECK(ncclGroupEnd(), comm_);
  leave(caller, {in, out});
}

std::unique_ptr<Work> NcclCommunicator::send_recv(const at::Tensor& send, int64_t dst,
                                                  const at::Tensor& recv, int64_t src) {
  check_peer(*this, "send_recv", dst);
  check_peer(*this, "send_recv", src);
  EAGLET_CHECK(send.scalar_type() == recv.scalar_type(),
               "nccl send_recv: send {} and recv {} differ in dtype", tensor_text(send),
               tensor_text(recv));
  enter("send_recv", {send, recv});
  c10::cuda::CUDAGuard guard(device_);
  EAGLET_NCCL_CHECK(ncclGroupStart(), comm_);
  EAGLET_NCCL_CHECK(ncclSend(send.data_ptr(), send.numel(), nccl_type("send_recv", send),
                             static_cast<int>(dst), comm_, stream_),
                    comm_);
  EAGLET_NCCL_CHECK(ncclRecv(recv.data_ptr(), recv.numel(), nccl_type("send_recv", recv),
                             static_cast<int>(src), comm_, stream_),
                    comm_);
  EAGLET_NCCL_CHECK(ncclGroupEnd(), comm_);
  for (const auto& t : {send, recv})
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_);
  at::cuda::CUDAEvent done;
  done.record(stream_);
  return std::make_unique<NcclWork>(std::move(done), device_);
}

void NcclCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  EAGLET_CHECK(!(t.scalar_type() == at::kBool && op == ReduceOp::sum),
               "nccl all_reduce: sum of a bool tensor {} is not defined; use max (logical or)",
               tensor_text(t));
  auto caller = enter("all_reduce", {t});
  c10::cuda::CUDAGuard guard(device_);
  EAGLET_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type("all_reduce", t),
                                  op == ReduceOp::sum ? ncclSum : ncclMax, comm_, stream_),
                    comm_);
  leave(caller, {t});
}

void NcclCommunicator::broadcast(const at::Tensor& t, int64_t root) {
  check_peer(*this, "broadcast", root);
  auto caller = enter("broadcast", {t});
  c10::cuda::CUDAGuard guard(device_);
  EAGLET_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type("broadcast", t),
                                  static_cast<int>(root), comm_, stream_),
                    comm_);
  leave(caller, {t});
}

void NcclCommunicator::barrier() {
  auto token = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
  all_reduce(token, ReduceOp::sum);
  stream_.synchronize();  // a barrier is a host-level promise; never on the hot path
}

}  // namespace eaglet
