// RMSNorm, linear, RoPE.
#include "model/layers.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rms_norm.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/where.h>

#include <cmath>

#include "core/error.h"

namespace eaglet::model {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // ATen's RMSNorm: statistics in fp32 (fp64 on the fp64 path), one fused kernel on CUDA.
  return at::rms_norm(x, {x.size(-1)}, weight.to(x.scalar_type()), eps);
}

at::Tensor project(const at::Tensor& x, const at::Tensor& weight) {
  return at::matmul(x, weight.to(x.scalar_type()).t());
}

at::Tensor rope_inv_freq(const DraftArchConfig& cfg, c10::Device device) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t d = cfg.head_dim;
  // θ^(−2i/d) computed in double then rounded once, like the reference's float arange.
  auto idx = at::arange(0, d, 2, opts.dtype(at::kDouble));
  auto inv = (1.0 / at::pow(cfg.rope_theta, idx / static_cast<double>(d)));
  if (cfg.rope_type == "linear") {
    inv = inv / cfg.rope_factor;
  } else if (cfg.rope_type == "llama3") {
    // Llama 3.1 frequency-dependent scaling (HF _compute_llama3_parameters).
    const double factor = cfg.rope_factor, lo = cfg.rope_low_freq_factor,
                 hi = cfg.rope_high_freq_factor;
    const double old_ctx = static_cast<double>(cfg.rope_original_max_position_embeddings);
    const double low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
    auto wavelen = 2 * M_PI / inv;
    auto scaled = at::where(wavelen > low_wavelen, inv / factor, inv);
    auto smooth = (old_ctx / wavelen - lo) / (hi - lo);
    auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  } else {
    EAGLET_CHECK(cfg.rope_type == "none", "model.config.rope_type={}: not supported",
                 cfg.rope_type);
  }
  return inv.to(at::kFloat);
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& positions) {
  auto freqs = at::outer(positions.to(at::kFloat), inv_freq);  // [S, d/2]
  auto emb = at::cat({freqs, freqs}, -1);                      // [S, d]
  return {at::cos(emb), at::sin(emb)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  auto c = cos.to(x.scalar_type()).unsqueeze(1), s = sin.to(x.scalar_type()).unsqueeze(1);
  return x * c + rotated * s;
}

}  // namespace eaglet::model
