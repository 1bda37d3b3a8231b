// Optional tensor arguments as the kernels take them (shared by the CPU and CUDA implementations).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace zol2l {

// Internal linkage, like the math headers: these are compiled into ISA-specific and CUDA translation units.
static inline std::optional<at::Tensor> contiguous_opt(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

template <typename T>
static inline const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

}  // namespace zol2l
