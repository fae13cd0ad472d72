#include <torch/version.h>

#include "../core/memory_budget.h"
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
  m.def(
      "memory_in_use",
      [] {
        py::dict out;
        out["pinned_bytes"] = process_memory(MemoryKind::kPinned);
        out["shared_bytes"] = process_memory(MemoryKind::kShared);
        return out;
      },
      "Page-locked staging slots and mapped shared rings this process holds now.");
  py::class_<MemoryBudget, std::shared_ptr<MemoryBudget>>(
      m, "MemoryBudget", "A loader's limit on the page-locked and shared memory it allocates.")
      .def(py::init<uint64_t>(), py::arg("limit"))
      .def_property_readonly("limit", &MemoryBudget::limit)
      .def_property_readonly("used", &MemoryBudget::used);
  m.def("format_bytes", &format_bytes, py::arg("bytes"));
}

}  // namespace ferry
