// Device tensors through host memory: copy out (waits for the device), run the host operation,
// copy back (enqueued on the current stream, so later work sees the result).
#include "dist/staged_communicator.h"

#include <ATen/ops/empty.h>

namespace eaglet {
namespace {

// A contiguous host copy of t (t itself when it already is one).
at::Tensor on_host(const at::Tensor& t) {
  return t.cpu().contiguous();
}

// A host buffer shaped like t, for results.
at::Tensor host_like(const at::Tensor& t) {
  return at::empty(t.sizes(), t.options().device(c10::kCPU));
}

// The host transfer, then the received bytes copied into the device tensor.
class StagedWork final : public Work {
 public:
  StagedWork(std::unique_ptr<Work> host, at::Tensor staged, at::Tensor recv)
      : host_(std::move(host)), staged_(std::move(staged)), recv_(std::move(recv)) {}
  void wait() override {
    if (!host_) return;
    host_->wait();
    host_.reset();
    if (!recv_.is_same(staged_)) recv_.copy_(staged_);
  }

 private:
  std::unique_ptr<Work> host_;
  at::Tensor staged_, recv_;
};

}  // namespace

void StagedCommunicator::all_to_all(const at::Tensor& in, const at::Tensor& out) {
  check_all_to_all_args(*this, in, out);
  auto staged = host_like(out);
  host_->all_to_all(on_host(in), staged);
  out.copy_(staged);
}

std::unique_ptr<Work> StagedCommunicator::send_recv(const at::Tensor& send, int64_t dst,
                                                    const at::Tensor& recv, int64_t src) {
  auto staged = recv.is_cpu() && recv.is_contiguous() ? recv : host_like(recv);
  return std::make_unique<StagedWork>(host_->send_recv(on_host(send), dst, staged, src), staged,
                                      recv);
}

void StagedCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  auto staged = on_host(t);
  host_->all_reduce(staged, op);
  if (!staged.is_same(t)) t.copy_(staged);
}

void StagedCommunicator::broadcast(const at::Tensor& t, int64_t root) {
  auto staged = on_host(t);
  host_->broadcast(staged, root);
  if (!staged.is_same(t)) t.copy_(staged);
}

}  // namespace eaglet
