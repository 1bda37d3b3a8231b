// CPU tile kernels of the coordinatewise LSTM step, on raw pointers only.
//
// A tile of kTile coordinates is transposed into structure-of-arrays buffers, so that every inner loop runs
// over the tile with the (shared) weight as a broadcast scalar: GCC vectorizes those loops. This header
// holds no torch code so that lstm_cpu_avx2.cpp can compile it a second time for AVX2+FMA without the
// one-definition hazard of compiling torch's inline functions with different target flags.
#pragma once

#include "common/activations.h"
#include "cpu/lstm_ranges.h"

#include <algorithm>
#include <cstdint>

namespace zol2l {
namespace ZOL2L_CPU_NS {
namespace {

constexpr int kTile = 16;

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

// Loads rows [n0, n0 + nt) into the tile (zero padding) and computes activations, c_new, tanh(c_new), h_new.
template <typename T>
inline void tile_forward(const LstmPtrs<T>& p, int64_t n0, int nt, TileState<T>& s) {
  const int I = p.I, H = p.H;
  for (int k = 0; k < I; ++k)
    for (int t = 0; t < kTile; ++t) s.xs[k][t] = t < nt ? p.x[(n0 + t) * I + k] : T(0);
  for (int k = 0; k < H; ++k)
    for (int t = 0; t < kTile; ++t) {
      s.hs[k][t] = t < nt ? p.h[(n0 + t) * H + k] : T(0);
      s.cs[k][t] = t < nt ? p.c[(n0 + t) * H + k] : T(0);
    }
  for (int g = 0; g < 4 * H; ++g) {
    T acc[kTile];
    const T b = p.bias ? p.bias[g] : T(0);
    for (int t = 0; t < kTile; ++t) acc[t] = b;
    for (int k = 0; k < I; ++k) {
      const T w = p.w_ih[g * I + k];
      for (int t = 0; t < kTile; ++t) acc[t] += w * s.xs[k][t];
    }
    for (int k = 0; k < H; ++k) {
      const T w = p.w_hh[g * H + k];
      for (int t = 0; t < kTile; ++t) acc[t] += w * s.hs[k][t];
    }
    for (int t = 0; t < kTile; ++t) s.gates[g][t] = acc[t];
  }
  for (int u = 0; u < H; ++u)
    for (int t = 0; t < kTile; ++t) {
      const CellOut<T> r = lstm_cell(s.gates[u][t], s.gates[H + u][t], s.gates[2 * H + u][t],
                                     s.gates[3 * H + u][t], s.cs[u][t]);
      s.gates[u][t] = r.i;
      s.gates[H + u][t] = r.f;
      s.gates[2 * H + u][t] = r.g;
      s.gates[3 * H + u][t] = r.o;
      s.cn[u][t] = r.c_new;
      s.tc[u][t] = r.tanh_c;
      s.hn[u][t] = r.h_new;
    }
}

template <typename T>
void lstm_forward_range(const LstmPtrs<T>& p, T* y, T* h_new, T* c_new, int64_t begin, int64_t end) {
  TileState<T> s;
  const int H = p.H, O = p.O;
  for (int64_t n0 = begin; n0 < end; n0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, end - n0));
    tile_forward(p, n0, nt, s);
    for (int o = 0; o < O; ++o) {
      T acc[kTile];
      const T b = p.b_out ? p.b_out[o] : T(0);
      for (int t = 0; t < kTile; ++t) acc[t] = b;
      for (int k = 0; k < H; ++k) {
        const T w = p.w_out[o * H + k];
        for (int t = 0; t < kTile; ++t) acc[t] += w * s.hn[k][t];
      }
      for (int t = 0; t < nt; ++t) y[(n0 + t) * O + o] = acc[t];
    }
    for (int t = 0; t < nt; ++t)
      for (int k = 0; k < H; ++k) {
        h_new[(n0 + t) * H + k] = s.hn[k][t];
        c_new[(n0 + t) * H + k] = s.cn[k][t];
      }
  }
}

template <typename T>
void lstm_backward_range(const LstmPtrs<T>& p, const LstmGradPtrs<T>& gp, double* wacc, int64_t begin,
                         int64_t end) {
  TileState<T> s;
  alignas(64) T gy[kMaxOutput][kTile];
  alignas(64) T da[4 * kMaxHidden][kTile];
  const int I = p.I, H = p.H, O = p.O;
  double* acc_wih = wacc;
  double* acc_whh = acc_wih + 4 * H * I;
  double* acc_b = acc_whh + 4 * H * H;
  double* acc_wout = acc_b + 4 * H;
  double* acc_bout = acc_wout + O * H;
  for (int64_t n0 = begin; n0 < end; n0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, end - n0));
    tile_forward(p, n0, nt, s);
    for (int o = 0; o < O; ++o)
      for (int t = 0; t < kTile; ++t) gy[o][t] = t < nt ? gp.grad_y[(n0 + t) * O + o] : T(0);
    // Head: dh_new = grad_h_new + w_out^T gy, and the head's weight gradients.
    for (int o = 0; o < O; ++o) {
      T sb = 0;
      for (int t = 0; t < kTile; ++t) sb += gy[o][t];
      acc_bout[o] += sb;
      for (int k = 0; k < H; ++k) {
        T sw = 0;
        for (int t = 0; t < kTile; ++t) sw += gy[o][t] * s.hn[k][t];
        acc_wout[o * H + k] += sw;
      }
    }
    for (int u = 0; u < H; ++u) {
      T dh[kTile], dc[kTile];
      for (int t = 0; t < kTile; ++t) {
        dh[t] = (gp.grad_h_new && t < nt) ? gp.grad_h_new[(n0 + t) * H + u] : T(0);
        dc[t] = (gp.grad_c_new && t < nt) ? gp.grad_c_new[(n0 + t) * H + u] : T(0);
      }
      for (int o = 0; o < O; ++o) {
        const T w = p.w_out[o * H + u];
        for (int t = 0; t < kTile; ++t) dh[t] += w * gy[o][t];
      }
      for (int t = 0; t < kTile; ++t) {
        CellOut<T> r;
        r.i = s.gates[u][t];
        r.f = s.gates[H + u][t];
        r.g = s.gates[2 * H + u][t];
        r.o = s.gates[3 * H + u][t];
        r.tanh_c = s.tc[u][t];
        T dcp;
        lstm_cell_backward(r, s.cs[u][t], dh[t], dc[t], da[u][t], da[H + u][t], da[2 * H + u][t],
                           da[3 * H + u][t], dcp);
        s.cs[u][t] = dcp;  // the old cell state is no longer needed: reuse its slot for grad_c
      }
    }
    for (int g = 0; g < 4 * H; ++g) {
      T sb = 0;
      for (int t = 0; t < kTile; ++t) sb += da[g][t];
      acc_b[g] += sb;
      for (int k = 0; k < I; ++k) {
        T sw = 0;
        for (int t = 0; t < kTile; ++t) sw += da[g][t] * s.xs[k][t];
        acc_wih[g * I + k] += sw;
      }
      for (int k = 0; k < H; ++k) {
        T sw = 0;
        for (int t = 0; t < kTile; ++t) sw += da[g][t] * s.hs[k][t];
        acc_whh[g * H + k] += sw;
      }
    }
    // grad_x = da w_ih, grad_h = da w_hh: accumulate over gates with the weight broadcast.
    for (int k = 0; k < I; ++k) {
      T acc[kTile] = {};
      for (int g = 0; g < 4 * H; ++g) {
        const T w = p.w_ih[g * I + k];
        for (int t = 0; t < kTile; ++t) acc[t] += w * da[g][t];
      }
      for (int t = 0; t < nt; ++t) gp.grad_x[(n0 + t) * I + k] = acc[t];
    }
    for (int k = 0; k < H; ++k) {
      T acc[kTile] = {};
      for (int g = 0; g < 4 * H; ++g) {
        const T w = p.w_hh[g * H + k];
        for (int t = 0; t < kTile; ++t) acc[t] += w * da[g][t];
      }
      for (int t = 0; t < nt; ++t) {
        gp.grad_h[(n0 + t) * H + k] = acc[t];
        gp.grad_c[(n0 + t) * H + k] = s.cs[k][t];
      }
    }
  }
}

}  // namespace
}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
