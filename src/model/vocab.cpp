// Building, checking, loading and saving the t2d/d2t vocabulary mapping.
#include "model/vocab.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace eaglet::model {

at::Tensor VocabMap::draft_to_target() const {
  return at::arange(d2t.size(0), d2t.options()) + d2t;
}

void count_loss_tokens(at::Tensor& counts, const at::Tensor& ids, const at::Tensor& loss_mask) {
  auto sel = ids.masked_select(loss_mask.to(at::kBool)).clamp(0, counts.size(0) - 1);
  counts += at::bincount(sel.cpu(), {}, counts.size(0));
}

VocabMap vocab_from_counts(const at::Tensor& counts, int64_t vd) {
  const int64_t vt = counts.size(0);
  EAGLET_CHECK(vd >= 1 && vd <= vt, "draft vocabulary {} must be in [1, {}]", vd, vt);
  // Stable descending sort keeps ties in ascending id order.
  auto order = std::get<1>(at::sort(counts.cpu(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto chosen = std::get<0>(at::sort(order.narrow(0, 0, vd)));
  VocabMap m;
  m.t2d = at::zeros({vt}, at::TensorOptions().dtype(at::kBool));
  m.t2d.index_fill_(0, chosen, true);
  m.d2t = chosen - at::arange(vd, chosen.options());
  return m;
}

VocabMap identity_vocab(int64_t vt) {
  return {at::ones({vt}, at::TensorOptions().dtype(at::kBool)),
          at::zeros({vt}, at::TensorOptions().dtype(at::kLong))};
}

VocabMap load_vocab(const std::string& path, int64_t vt, int64_t vd) {
  std::string file = path;
  if (io::is_dir(path)) file = io::join_path(path, "model.safetensors");
  io::SafetensorsFile f(file);
  VocabMap m;
  m.t2d = f.get("t2d", {vt}).to(at::kBool);
  m.d2t = f.get("d2t", {vd}).to(at::kLong);
  auto ids = m.draft_to_target();
  EAGLET_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < vt,
               "{}: d2t maps draft ids outside the target vocabulary of {}", file, vt);
  auto from_t2d = at::arange(vt, ids.options()).masked_select(m.t2d);
  EAGLET_CHECK(from_t2d.numel() == vd && at::equal(std::get<0>(at::sort(ids)), from_t2d),
               "{}: t2d ({} tokens) and d2t ({} tokens) describe different draft vocabularies",
               file, from_t2d.numel(), vd);
  return m;
}

void save_vocab(const std::string& path, const VocabMap& map) {
  io::write_safetensors(path, {{"d2t", map.d2t}, {"t2d", map.t2d}});
}

}  // namespace eaglet::model
