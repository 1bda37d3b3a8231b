// Makes the shared library importable as zol2l_ext._C; importing it runs the TORCH_LIBRARY registrations.
#include <Python.h>

#include "cpu/isa_kernels.h"

namespace {

// _C.cpu_isa(): which build of the CPU kernels this process runs ("avx512", "avx2" or "default").
PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(zol2l::cpu_isa_name()); }

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The instruction set of the CPU kernels in use: avx512, avx2 or default."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}
