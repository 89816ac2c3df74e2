// The fp32 masters' gradients in one flat buffer (DESIGN §6). Each master's .grad is a view of its
// region, so the gradient sync reduces the buffer in place (no concatenation, no copy back, no
// second copy of every gradient at the sync's peak) and nothing is freed or reallocated between
// optimizer steps. The matrices' gradients reach it through sinks (model/layers.h, to_compute):
// the first write of an optimizer step overwrites its region (no zero fill), later ones add, so
// accumulation over micro-batches needs no separate add either. Regions written by autograd's own
// accumulation (the norm weights, an fp32 matrix that is its own compute copy) are zeroed by
// clear().
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace torch::autograd {
struct AutogradContext;
}

namespace eaglet::model {

// Where the gradient of masters stacked by rows goes: their regions of the buffer as one
// [rows, cols] matrix, and whether it holds any of this optimizer step's gradient yet. A handle:
// copies share the state (autograd functions keep it in their saved data).
class GradSink {
 public:
  GradSink() = default;
  bool defined() const { return region_.defined(); }
  const at::Tensor& region() const { return region_; }
  // Nothing written since the buffer was cleared: the next write overwrites (GEMM β = 0).
  bool fresh() const { return state_.get(0) != 0; }
  void mark_written() { state_.set(0, 0); }
  // region = g where fresh, else region += g (g cast to the region's dtype); then written.
  void accumulate(const at::Tensor& g);
  void save(torch::autograd::AutogradContext* ctx, const std::string& key) const;
  static GradSink load(torch::autograd::AutogradContext* ctx, const std::string& key);

 private:
  friend class GradBuffer;
  GradSink(at::Tensor region, c10::List<int64_t> state)
      : region_(std::move(region)), state_(std::move(state)) {}
  at::Tensor region_;
  c10::List<int64_t> state_;  // {fresh}
};

class GradBuffer {
 public:
  // `masters` (fp32, one device) in buffer order; their .grad become views of it, zeroed.
  explicit GradBuffer(std::vector<std::pair<std::string, at::Tensor*>> masters);
  const at::Tensor& flat() const { return flat_; }
  // The sink of `masters`: consecutive masters of this buffer, in order, with the same columns
  // (q|k|v, gate|up) or one master. Undefined where they are not (another copy of the weights).
  // The same masters get the same sink every time; their regions are the sink's from then on
  // (clear() leaves them to it).
  GradSink sink(at::TensorList masters);
  // For the next optimizer step: every sink fresh, the other regions zeroed, each master's .grad
  // its view again (should anything have replaced it).
  void clear();
  // Before the sums are read (gradient sync, optimizer, a check): a sink's region that nothing
  // wrote since clear() is zeroed, and a .grad that something else set is copied into its view
  // (which becomes the .grad again). Waits for nothing.
  void settle();

 private:
  std::vector<std::pair<std::string, at::Tensor*>> masters_;
  at::Tensor flat_;
  std::vector<at::Tensor> views_;
  std::vector<int64_t> offsets_;
  std::vector<bool> in_sink_;                     // per master: its region is a sink's
  std::vector<std::pair<int64_t, GradSink>> sinks_;  // by first master
};

}  // namespace eaglet::model
