// How a result is compared with its reference wherever a check declares a tolerance (verify-usp,
// the per-op harness, the model tests). One number per tensor hides a wrong region smaller than
// the tolerance times the largest entry, so three are kept:
//   max_norm  max|Δ| / max|ref|                       (the whole tensor's scale)
//   nmse      Σ Δ² / Σ ref²                           (the error's energy)
//   row       max over rows r of max|Δ_r| / max(max|ref_r|, median_r max|ref_r|)
//             (each row against its own scale, so a wrong row of small entries shows; rows are
//             dim 0, a 1-D tensor's rows its elements; the floor, the median row's scale, keeps
//             round-off in near-zero rows, which follows the summands' size, from counting, and
//             unlike the RMS or the maximum one outlier does not raise it)
// A check passes when max_norm is within its tolerance and row within its row tolerance (the same
// number in fp32; looser in bf16, where a row's sum of bf16-rounded products carries noise of a
// few 2^-8 of that row's own scale: verify-usp declares 1e-4 in fp32 against fp64, 1e-1 in bf16).
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/median.h>

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace eaglet {

struct TensorError {
  double max_norm = 0, nmse = 0, row = 0;
  double worst() const { return std::max(max_norm, row); }
  bool within(double tol, double tol_row) const { return max_norm <= tol && row <= tol_row; }
  std::string text() const {
    return fmt::format("max-normalised {:.2e}, row-normalised {:.2e}, NMSE {:.2e}", max_norm, row,
                       nmse);
  }
};

inline TensorError tensor_error(const at::Tensor& got, const at::Tensor& want) {
  auto g = got.detach().to(at::kDouble).cpu(), w = want.detach().to(at::kDouble).cpu();
  TensorError e;
  if (w.numel() == 0) return e;
  auto d = at::abs(g - w), a = at::abs(w);
  const double scale = std::max(a.max().item<double>(), 1e-300);
  e.max_norm = d.max().item<double>() / scale;
  const double energy = std::max((w * w).sum().item<double>(), 1e-300);
  e.nmse = (d * d).sum().item<double>() / energy;
  auto rows = [](const at::Tensor& x) {
    return x.dim() >= 2 ? x.reshape({x.size(0), -1}) : x.reshape({-1, 1});
  };
  auto row_scale = at::amax(rows(a), {1});
  const double floor = std::max(row_scale.median().item<double>(), 1e-300);
  auto row_err = at::amax(rows(d), {1}) / at::clamp_min(row_scale, floor);
  e.row = row_err.max().item<double>();
  return e;
}

// The worse of two errors, field by field.
inline TensorError worse(const TensorError& a, const TensorError& b) {
  return {std::max(a.max_norm, b.max_norm), std::max(a.nmse, b.nmse), std::max(a.row, b.row)};
}

}  // namespace eaglet
