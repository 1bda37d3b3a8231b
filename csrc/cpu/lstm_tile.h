// CPU tile kernels of the coordinatewise LSTM step, on raw pointers only.
//
// A tile of kTile coordinates is transposed into structure-of-arrays buffers, so that every inner loop runs
// over the tile with the (shared) weight as a broadcast scalar: GCC vectorizes those loops. This header
// holds no torch code so that kernels_avx2.cpp can compile it a second time for AVX2+FMA without the
// one-definition hazard of compiling torch's inline functions with different target flags.
#pragma once

#include "common/activations.h"
#include "cpu/isa_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>

namespace zol2l {
namespace ZOL2L_CPU_NS {
namespace {

constexpr int kTile = 16;

// One tile row held as whole machine vectors (GCC vector extensions, 32 bytes = one AVX2 register; two SSE
// registers in the baseline build). The matrix parts (gates, head, input/state gradients, weight-gradient
// accumulators) work on rows with the weight broadcast; plain loops over t left the accumulator in memory,
// and a single 64-byte vector type was split through the stack: both cost several times more instructions.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int kLanes = static_cast<int>(32 / sizeof(T));
template <typename T>
constexpr int kVecs = kTile / kLanes<T>;

// Whole-vector access to a tile row. Every row these kernels load or store is one of TileState's (or the
// backward's) alignas(64) [kTile] rows, so it is vector-aligned: one aligned load or store per vector. A
// memcpy instead let GCC (generic tuning splits unaligned 256-bit moves) copy rows through the stack in
// 16-byte halves and read them back as 32 bytes, a failed store-to-load forward on every row of every gate
// group: 26% of the forward's cycles on one reload (perf, N = 307200).
template <typename T>
struct VecAliasOf {
  typedef T type __attribute__((vector_size(32), may_alias));
};
template <typename T>
inline Vec<T> load_row_vec(const T* row, int i) {
  return *static_cast<const typename VecAliasOf<T>::type*>(__builtin_assume_aligned(row + i * kLanes<T>, 32));
}
template <typename T>
inline void store_row_vec(T* row, int i, Vec<T> x) {
  *static_cast<typename VecAliasOf<T>::type*>(__builtin_assume_aligned(row + i * kLanes<T>, 32)) = x;
}

template <typename T>
struct TileVec {
  Vec<T> v[kVecs<T>];
  T operator[](int t) const { return v[t / kLanes<T>][t % kLanes<T>]; }
  TileVec& operator+=(const TileVec& o) {
    for (int i = 0; i < kVecs<T>; ++i) v[i] += o.v[i];
    return *this;
  }
  // this += w * row
  void fma(T w, const T* row) {
    for (int i = 0; i < kVecs<T>; ++i) v[i] += w * load_row_vec(row, i);
  }
  // this += w * x
  void fma_row(T w, const TileVec& x) {
    for (int i = 0; i < kVecs<T>; ++i) v[i] += w * x.v[i];
  }
  // this += a * row
  void fma(const TileVec& a, const T* row) {
    for (int i = 0; i < kVecs<T>; ++i) v[i] += a.v[i] * load_row_vec(row, i);
  }
};

template <typename T>
inline TileVec<T> vload(const T* p) {
  TileVec<T> r;
  for (int i = 0; i < kVecs<T>; ++i) r.v[i] = load_row_vec(p, i);
  return r;
}
template <typename T>
inline void vstore(T* p, const TileVec<T>& r) {
  for (int i = 0; i < kVecs<T>; ++i) store_row_vec(p, i, r.v[i]);
}
template <typename T>
inline TileVec<T> vbroadcast(T x) {
  TileVec<T> r;
  for (int i = 0; i < kVecs<T>; ++i) r.v[i] = Vec<T>{} + x;
  return r;
}

template <typename T>
struct TileState {
  alignas(64) T xs[kMaxInput][kTile];
  alignas(64) T hs[kMaxHidden][kTile];
  alignas(64) T cs[kMaxHidden][kTile];
  alignas(64) T gates[4 * kMaxHidden][kTile];  // pre-activations, then activations
  alignas(64) T cn[kMaxHidden][kTile];
  alignas(64) T tc[kMaxHidden][kTile];  // tanh(c_new)
  alignas(64) T hn[kMaxHidden][kTile];
};

// One hidden unit across the tile. Restrict-qualified parameters (GCC honours restrict reliably on
// parameters, not on locals) tell the vectorizer that the rows are distinct, so no scalar fallback.
template <typename T>
inline void cell_row(T* __restrict gi, T* __restrict gf, T* __restrict gg, T* __restrict go,
                     const T* __restrict cs, T* __restrict cn, T* __restrict tc, T* __restrict hn) {
  for (int t = 0; t < kTile; ++t) {
    const CellOut<T> r = lstm_cell(gi[t], gf[t], gg[t], go[t], cs[t]);
    gi[t] = r.i;
    gf[t] = r.f;
    gg[t] = r.g;
    go[t] = r.o;
    cn[t] = r.c_new;
    tc[t] = r.tanh_c;
    hn[t] = r.h_new;
  }
}

// Backward of one hidden unit across the tile; cs holds c on entry and grad_c on return.
template <typename T>
inline void cell_row_backward(const T* __restrict gi, const T* __restrict gf, const T* __restrict gg,
                              const T* __restrict go, const T* __restrict tc, T* __restrict cs,
                              const T* __restrict dh, const T* __restrict dc, T* __restrict dai,
                              T* __restrict daf, T* __restrict dag, T* __restrict dao) {
  for (int t = 0; t < kTile; ++t) {
    CellOut<T> r;
    r.i = gi[t];
    r.f = gf[t];
    r.g = gg[t];
    r.o = go[t];
    r.tanh_c = tc[t];
    T dcp;
    lstm_cell_backward(r, cs[t], dh[t], dc[t], dai[t], daf[t], dag[t], dao[t], dcp);
    cs[t] = dcp;
  }
}

// Loads rows [n0, n0 + nt) into the tile (zero padding) and computes activations, c_new, tanh(c_new), h_new.
// dst[k][t] = src[(n0 + t) * width + k] for t < nt; zero for the padding lanes, and everywhere when src is null
// (an absent incoming gradient).
template <typename T>
inline void load_transposed(const T* src, int64_t n0, int nt, int width, T (*dst)[kTile]) {
  if (src == nullptr) {
    for (int k = 0; k < width; ++k)
      for (int t = 0; t < kTile; ++t) dst[k][t] = T(0);
  } else if (nt == kTile) {  // full tile: no per-element bound test
    for (int t = 0; t < kTile; ++t)
      for (int k = 0; k < width; ++k) dst[k][t] = src[(n0 + t) * width + k];
  } else {
    for (int k = 0; k < width; ++k)
      for (int t = 0; t < kTile; ++t) dst[k][t] = t < nt ? src[(n0 + t) * width + k] : T(0);
  }
}

// kH > 0 fixes the hidden size at compile time (the common H = 10 of the UpdateRNN and QueryRNN), so that
// the loops over hidden units unroll; kH = 0 reads it from p.
template <int kH, typename T>
inline int hidden_of(const LstmPtrs<T>& p) {
  return kH > 0 ? kH : p.H;
}

template <typename T, int kH>
inline void tile_forward(const LstmPtrs<T>& p, int64_t n0, int nt, TileState<T>& s) {
  const int I = p.I, H = hidden_of<kH>(p);
  load_transposed(p.x, n0, nt, I, s.xs);
  load_transposed(p.h, n0, nt, H, s.hs);
  load_transposed(p.c, n0, nt, H, s.cs);
  // Four gates at a time (4H is a multiple of 4): each state row is loaded once per group, and the four
  // accumulators stay in registers.
  for (int g = 0; g < 4 * H; g += 4) {
    TileVec<T> acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = vbroadcast<T>(p.bias ? p.bias[g + j] : T(0));
    for (int k = 0; k < I; ++k) {
      const TileVec<T> xk = vload(s.xs[k]);
      for (int j = 0; j < 4; ++j) acc[j].fma_row(p.w_ih[(g + j) * I + k], xk);
    }
    for (int k = 0; k < H; ++k) {
      const TileVec<T> hk = vload(s.hs[k]);
      for (int j = 0; j < 4; ++j) acc[j].fma_row(p.w_hh[(g + j) * H + k], hk);
    }
    for (int j = 0; j < 4; ++j) vstore(s.gates[g + j], acc[j]);
  }
  for (int u = 0; u < H; ++u)
    cell_row(s.gates[u], s.gates[H + u], s.gates[2 * H + u], s.gates[3 * H + u], s.cs[u], s.cn[u], s.tc[u],
             s.hn[u]);
}

template <typename T, int kH>
void lstm_forward_range_h(const LstmPtrs<T>& p, T* y, T* h_new, T* c_new, int64_t begin, int64_t end) {
  TileState<T> s;
  const int H = hidden_of<kH>(p), O = p.O;
  for (int64_t n0 = begin; n0 < end; n0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, end - n0));
    tile_forward<T, kH>(p, n0, nt, s);
    for (int o = 0; o < O; ++o) {
      TileVec<T> acc = vbroadcast<T>(p.b_out ? p.b_out[o] : T(0));
      for (int k = 0; k < H; ++k) acc.fma(p.w_out[o * H + k], s.hn[k]);
      for (int t = 0; t < nt; ++t) y[(n0 + t) * O + o] = acc[t];
    }
    for (int t = 0; t < nt; ++t)
      for (int k = 0; k < H; ++k) {
        h_new[(n0 + t) * H + k] = s.hn[k][t];
        c_new[(n0 + t) * H + k] = s.cn[k][t];
      }
  }
}

// Zeroed, over-aligned scratch owned by this translation unit. Not std::vector: its out-of-line template
// code would be a weak symbol shared with the baseline build, which could then run AVX2 instructions.
template <typename T>
struct LaneBuffer {
  explicit LaneBuffer(int64_t n)
      : data(static_cast<TileVec<T>*>(::operator new(sizeof(TileVec<T>) * n, std::align_val_t(64)))), size(n) {
    for (int64_t i = 0; i < n; ++i) data[i] = vbroadcast<T>(0);
  }
  ~LaneBuffer() { ::operator delete(data, std::align_val_t(64)); }
  LaneBuffer(const LaneBuffer&) = delete;
  LaneBuffer& operator=(const LaneBuffer&) = delete;
  TileVec<T>* data;
  int64_t size;
};

template <typename T, int kH>
void lstm_backward_range_h(const LstmPtrs<T>& p, const LstmGradPtrs<T>& gp, double* wacc, int64_t begin,
                           int64_t end) {
  TileState<T> s;
  alignas(64) T gy[kMaxOutput][kTile];
  alignas(64) T da[4 * kMaxHidden][kTile];
  alignas(64) T dhs[kMaxHidden][kTile];  // incoming grad of h_new, then of h_new through the head too
  alignas(64) T dcs[kMaxHidden][kTile];
  const int I = p.I, H = hidden_of<kH>(p), O = p.O;
  // Per-lane weight-gradient accumulators for the whole range: one vector FMA per weight and tile, and a
  // single horizontal sum (into double) at the end instead of one per tile.
  LaneBuffer<T> lanes(weight_grad_size(I, H, O));
  TileVec<T>* acc_wih = lanes.data;
  TileVec<T>* acc_whh = acc_wih + 4 * H * I;
  TileVec<T>* acc_b = acc_whh + 4 * H * H;
  TileVec<T>* acc_wout = acc_b + 4 * H;
  TileVec<T>* acc_bout = acc_wout + O * H;
  for (int64_t n0 = begin; n0 < end; n0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, end - n0));
    tile_forward<T, kH>(p, n0, nt, s);
    // Padding lanes get zero incoming gradients, hence zero gate gradients: they add nothing below.
    load_transposed(gp.grad_y, n0, nt, O, gy);
    load_transposed(gp.grad_h_new, n0, nt, H, dhs);
    load_transposed(gp.grad_c_new, n0, nt, H, dcs);
    for (int o = 0; o < O; ++o) {
      const TileVec<T> g = vload(gy[o]);
      acc_bout[o] += g;
      for (int k = 0; k < H; ++k) acc_wout[o * H + k].fma(g, s.hn[k]);
    }
    for (int u = 0; u < H; ++u) {
      T* dh = dhs[u];
      const T* dc = dcs[u];
      // dh_new = grad_h_new + w_out^T gy
      TileVec<T> dhv = vload(dh);
      for (int o = 0; o < O; ++o) dhv.fma(p.w_out[o * H + u], gy[o]);
      vstore(dh, dhv);
      // The old cell state is no longer needed: its slot receives grad_c.
      cell_row_backward(s.gates[u], s.gates[H + u], s.gates[2 * H + u], s.gates[3 * H + u], s.tc[u], s.cs[u], dh,
                        dc, da[u], da[H + u], da[2 * H + u], da[3 * H + u]);
    }
    for (int g = 0; g < 4 * H; ++g) {
      const TileVec<T> d = vload(da[g]);
      acc_b[g] += d;
      for (int k = 0; k < I; ++k) acc_wih[g * I + k].fma(d, s.xs[k]);
      for (int k = 0; k < H; ++k) acc_whh[g * H + k].fma(d, s.hs[k]);
    }
    // grad_x = da w_ih, grad_h = da w_hh
    for (int k = 0; k < I; ++k) {
      TileVec<T> acc = vbroadcast<T>(0);
      for (int g = 0; g < 4 * H; ++g) acc.fma(p.w_ih[g * I + k], da[g]);
      for (int t = 0; t < nt; ++t) gp.grad_x[(n0 + t) * I + k] = acc[t];
    }
    for (int k = 0; k < H; ++k) {
      TileVec<T> acc = vbroadcast<T>(0);
      for (int g = 0; g < 4 * H; ++g) acc.fma(p.w_hh[g * H + k], da[g]);
      for (int t = 0; t < nt; ++t) {
        gp.grad_h[(n0 + t) * H + k] = acc[t];
        gp.grad_c[(n0 + t) * H + k] = s.cs[k][t];
      }
    }
  }
  for (int64_t i = 0; i < lanes.size; ++i) {
    double sum = 0;
    for (int t = 0; t < kTile; ++t) sum += static_cast<double>(lanes.data[i][t]);
    wacc[i] += sum;
  }
}

template <typename T>
void lstm_forward_range(const LstmPtrs<T>& p, T* y, T* h_new, T* c_new, int64_t begin, int64_t end) {
  if (p.H == 10)
    lstm_forward_range_h<T, 10>(p, y, h_new, c_new, begin, end);
  else
    lstm_forward_range_h<T, 0>(p, y, h_new, c_new, begin, end);
}

template <typename T>
void lstm_backward_range(const LstmPtrs<T>& p, const LstmGradPtrs<T>& gp, double* wacc, int64_t begin,
                         int64_t end) {
  if (p.H == 10)
    lstm_backward_range_h<T, 10>(p, gp, wacc, begin, end);
  else
    lstm_backward_range_h<T, 0>(p, gp, wacc, begin, end);
}

}  // namespace
}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
