// CPU implementation of splitmix64: the SplitMix64 finaliser (Steele, Lea and Flood 2014) on int64 bit patterns.
//
// zol2l_ext/zo/seeding.py derives every key of a run with it (a step's keys, the Bernoulli choice, a minibatch);
// as a dozen int64 tensor ops it cost ~30 us per call whatever the batch, a tenth of a one-image ZO-LSTM step's
// own work. One pass here, bit for bit the same numbers (uint64 arithmetic wraps as the tensor ops' int64 does).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

namespace zol2l {
namespace {

at::Tensor splitmix64_cpu(const at::Tensor& x_) {
  TORCH_CHECK(x_.scalar_type() == at::kLong, "splitmix64: expects an int64 tensor, got ", x_.scalar_type());
  const at::Tensor x = x_.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t n = x.numel();
  const auto* in = reinterpret_cast<const uint64_t*>(x.const_data_ptr<int64_t>());
  auto* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = in[i] + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    o[i] = z ^ (z >> 31);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) { m.impl("splitmix64", &splitmix64_cpu); }

}  // namespace zol2l
