// The ONE list of segproto op schemas. Kernels register per backend in csrc/ops/*/
// (TORCH_LIBRARY_IMPL); fake kernels and autograd are registered in segproto/ops.py.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(segproto, m) {
  m.def("class_sums(Tensor feats, Tensor labels, int num_classes, int ignore_index=255, "
        "bool normalize=False) -> (Tensor, Tensor)");
  m.def("prototype_update_(Tensor(a!) protos, Tensor sums, Tensor counts, float momentum) -> ()");
  m.def("memory_bank_push_(Tensor(a!) bank, Tensor(b!) ptr, Tensor(c!) count, Tensor feats, "
        "Tensor labels, int ignore_index=255) -> ()");
  m.def("masked_cosine_correlation(Tensor query, Tensor support, Tensor mask, float eps=1e-07) -> Tensor");
  m.def("masked_cosine_correlation_backward(Tensor grad, Tensor query, Tensor support, Tensor mask, "
        "float eps) -> (Tensor, Tensor)");
  m.def("masked_cosine_prior(Tensor query, Tensor support, Tensor mask, float eps=1e-07) -> Tensor");
  m.def("prcl_negatives_(Tensor(a!) pix, Tensor(b!) cls, Tensor counts, Tensor words, Tensor pixels, "
        "Tensor start, Tensor count, int fill) -> Tensor");
  m.def("select_per_class(Tensor labels, Tensor keys, int num_per_class, int num_classes, "
        "int ignore_index=255) -> Tensor");
}

// `import segproto._C` loads this library, which runs the registrations above. The module itself
// has no functions: ops are reached through torch.ops.segproto.
static struct PyModuleDef segproto_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&segproto_module); }
