#include <torch/version.h>

#include "register.h"

namespace py = pybind11;

namespace ferry {

void register_backend(py::module_& m) {
  m.def("build_info", [] {
    py::dict info;
    info["torch_version"] = TORCH_VERSION;
#ifdef FERRY_WITH_CUDA_KERNELS
    info["cuda_kernels"] = true;
#else
    info["cuda_kernels"] = false;
#endif
    info["cxx_standard"] = static_cast<long>(__cplusplus);
    return info;
  });
}

}  // namespace ferry
