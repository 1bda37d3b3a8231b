// Body of a per-ISA translation unit: define ZOL2L_CPU_NS, then include this file.
#include "cpu/lstm_tile.h"

namespace zol2l {
namespace ZOL2L_CPU_NS {

LstmRangeFns<float> lstm_fns_float() { return {&lstm_forward_range<float>, &lstm_backward_range<float>}; }
LstmRangeFns<double> lstm_fns_double() { return {&lstm_forward_range<double>, &lstm_backward_range<double>}; }

}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
