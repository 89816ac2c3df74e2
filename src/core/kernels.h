// Which implementation each op with an own fused CUDA kernel runs: one row per kernel, chosen once
// per run from the device and compute dtype (choose_kernels, dist/device.h) and carried in
// model::TttOptions down to every op. Torch-free so that every layer can include it.
#pragma once

#include <array>
#include <string>

namespace eaglet {

// reference: the ATen composition (every device and dtype, the tests' yardstick). fused: eaglet's
// own CUDA kernel (bf16/fp16 on a GPU in a CUDA build); an op asked for it where it cannot run at
// all throws eaglet::Error naming the op. Per-call shape limits an op documents (contiguity,
// widths) still take the reference silently.
enum class Impl { reference, fused };

// One field per kernel; the default is every op on its reference.
struct Kernels {
  Impl widen = Impl::reference;     // to_compute's backward, bf16/fp16 -> fp32 (model/widen.cu)
  Impl rms_norm = Impl::reference;  // RMSNorm backward, dx and dw in one pass (model/rms_norm.cu)
  Impl input_norms = Impl::reference;  // the midlayer input's norms, rows by id (model/rms_norm.cu)
  Impl rope = Impl::reference;         // rotate-half RoPE, forward and backward (model/rope.cu)
  Impl swiglu = Impl::reference;       // silu(a)·b and its backward (model/swiglu.cu)
  Impl soft_ce_rows = Impl::reference;  // the loss rows: loss, argmax, dz (model/soft_ce_rows.cu)
  Impl target_rows = Impl::reference;   // target side: draft columns, lse, argmax (soft_ce_rows.cu)
  Impl scale = Impl::reference;         // in-place scaling by a device scalar (soft_ce_rows.cu)
  Impl ttt_diag = Impl::reference;      // TTT diagonal blocks and merge (attention/ttt_diag.cu)

  static Kernels all(Impl impl);
  bool operator==(const Kernels&) const = default;
};

// The rows by name, in declaration order (logs, tests).
struct KernelRow {
  const char* name;
  Impl Kernels::*field;
};
inline constexpr std::array<KernelRow, 9> kKernelRows{{{"widen", &Kernels::widen},
                                                       {"rms_norm", &Kernels::rms_norm},
                                                       {"input_norms", &Kernels::input_norms},
                                                       {"rope", &Kernels::rope},
                                                       {"swiglu", &Kernels::swiglu},
                                                       {"soft_ce_rows", &Kernels::soft_ce_rows},
                                                       {"target_rows", &Kernels::target_rows},
                                                       {"scale", &Kernels::scale},
                                                       {"ttt_diag", &Kernels::ttt_diag}}};
// A field added without its row would never be chosen or printed.
static_assert(sizeof(Kernels) == kKernelRows.size() * sizeof(Impl), "a Kernels field has no row");

inline Kernels Kernels::all(Impl impl) {
  Kernels k;
  for (const auto& row : kKernelRows) k.*row.field = impl;
  return k;
}

inline const char* impl_name(Impl impl) {
  return impl == Impl::fused ? "fused" : "reference";
}

// "widen=fused rms_norm=fused ..." for a log line.
inline std::string kernels_text(const Kernels& k) {
  std::string s;
  for (const auto& row : kKernelRows) {
    if (!s.empty()) s += ' ';
    s += std::string(row.name) + "=" + impl_name(k.*row.field);
  }
  return s;
}

}  // namespace eaglet
