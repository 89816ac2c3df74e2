// The comparison every declared tolerance uses (core/tensor_compare.h): a wrong region far
// smaller than the tolerance times the largest entry passes max-normalised error and must fail the
// row-normalised one.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>

#include <cmath>

#include "catch.h"
#include "core/tensor_compare.h"

TEST_CASE("tensor_error: a wrong row of small entries shows in the row-normalised error",
          "[compare]") {
  auto gen = at::detail::createCPUGenerator(5);
  auto ref = at::randn({64, 32}, gen, at::TensorOptions().dtype(at::kDouble));
  ref[0][0] = 1e6;    // one outlier sets max|ref|
  ref[7].mul_(1e-3);  // a row of small entries ...
  auto got = ref.clone();
  got[7].mul_(1.1);  // ... 10% wrong
  const auto e = eaglet::tensor_error(got, ref);
  INFO(e.text());
  CHECK(e.max_norm < 1e-8);  // invisible against the outlier
  CHECK(e.row > 5e-5);       // judged against the median row's scale, not the outlier
  CHECK(!e.within(1e-5, 1e-5));
  CHECK(eaglet::tensor_error(ref, ref).within(0, 0));
  // A 1-D tensor's rows are its elements; near-zero entries are judged against the RMS floor.
  auto v = at::randn({100}, gen, at::TensorOptions().dtype(at::kDouble));
  auto w = v.clone();
  w[3] = v[3] + 1e-9;
  CHECK(eaglet::tensor_error(w, v).row < 1e-8);
}
