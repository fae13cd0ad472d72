#include "../torch/staged_copy.h"
#include "register.h"

namespace py = pybind11;

namespace ferry {

py::tuple copy_stream_of(const DeviceTransfer& transfer) {
  const c10::Stream& s = transfer.stream();
  return py::make_tuple(s.id(), s.device_index(), static_cast<int>(s.device_type()));
}

void register_device(py::module_& m) {
  py::class_<StagedCopy>(m, "StagedCopy",
                         "Copies batches from host memory to a device through a ring of "
                         "page-locked slots and a side stream. One consumer thread.")
      .def(py::init<c10::Device, size_t, std::shared_ptr<MemoryBudget>>(), py::arg("device"),
           py::arg("slots"), py::arg("budget") = py::none())
      .def("to_device", &StagedCopy::to_device, py::arg("tensors"),
           py::call_guard<py::gil_scoped_release>(),
           "The tensors on the device, ready on the current stream.")
      .def_property_readonly("copy_stream",
                             [](const StagedCopy& s) { return copy_stream_of(s.transfer()); })
      .def_property_readonly("ring_slots", [](const StagedCopy& s) { return s.ring().slots(); })
      .def_property_readonly("ring_untracked_allocations",
                             [](const StagedCopy& s) { return s.ring().untracked_allocations(); })
      .def_property_readonly("ring_copy_waits",
                             [](const StagedCopy& s) { return s.ring().copy_waits(); });
}

}  // namespace ferry
