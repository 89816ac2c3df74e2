// Short text for tensor shapes and dtypes in error messages ("[4, 8] BFloat16").
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace eaglet {

inline std::string shape_text(c10::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

inline std::string tensor_text(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  return shape_text(t.sizes()) + " " + c10::toString(t.scalar_type()) + " on " + t.device().str();
}

}  // namespace eaglet
