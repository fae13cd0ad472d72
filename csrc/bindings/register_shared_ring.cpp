#include <torch/csrc/Dtype.h>

#include "../core/slot_layout.h"
#include "../torch/shared_ring_mapping.h"
#include "register.h"

namespace py = pybind11;

namespace ferry {

void register_shared_ring(py::module_& m) {
  // The slot layout rules, for the workers' ring collation (one definition, see
  // core/slot_layout.h).
  m.attr("SLOT_ALIGN") = kSlotAlign;
  m.def("strided_extent", &strided_extent, py::arg("sizes"), py::arg("strides"),
        py::arg("itemsize"), "Bytes from a strided tensor's first element to the end of its last.");
  m.def(
      "overlap_clusters",
      [](const std::vector<int64_t>& starts, const std::vector<int64_t>& extents) {
        py::list out;
        for (const OverlapCluster& c : overlap_clusters(starts, extents)) {
          out.append(py::make_tuple(c.lo, c.hi, py::cast(c.members)));
        }
        return out;
      },
      py::arg("starts"), py::arg("extents"),
      "The byte ranges that overlap, chained: [(lo aligned down, hi, [members by start])].");
  py::enum_<SlotState>(m, "SlotState")
      .value("FREE", SlotState::kFree)
      .value("FILLING", SlotState::kFilling)
      .value("READY", SlotState::kReady)
      .value("HELD", SlotState::kHeld);

  py::class_<SharedRingMapping, std::shared_ptr<SharedRingMapping>>(
      m, "SharedRing", "A worker's ring of batch slots in shared memory (a memfd).")
      .def_static("create", &SharedRingMapping::create, py::arg("fd"), py::arg("offset"),
                  py::arg("slot_bytes"), py::arg("nslots"))
      .def_static("attach", &SharedRingMapping::attach, py::arg("fd"), py::arg("offset"),
                  py::arg("budget") = py::none())
      .def_property_readonly("slot_bytes",
                             [](SharedRingMapping& r) { return r.ring().slot_bytes(); })
      .def_property_readonly("nslots", [](SharedRingMapping& r) { return r.ring().nslots(); })
      .def_property_readonly("mapped_bytes", &SharedRingMapping::mapped_bytes)
      .def("claim", [](SharedRingMapping& r) { return r.ring().claim(); },
           "A free slot, now FILLING; -1 when none is free.")
      .def("set", [](SharedRingMapping& r, uint32_t i, SlotState s) { r.ring().set(i, s); })
      .def("get", [](SharedRingMapping& r, uint32_t i) { return r.ring().get(i); })
      .def("count", [](SharedRingMapping& r, SlotState s) { return r.ring().count(s); })
      .def("slot_tensor", &SharedRingMapping::slot_tensor, py::arg("slot"))
      .def("release_unheld", &SharedRingMapping::release_unheld,
           "Returns the memory of every slot not held by the user's tensors.")
      .def(
          "take",
          [](SharedRingMapping& r, uint32_t slot, const py::list& refs, bool copy,
             bool pinned) {
            // refs: [(offset, dtype, sizes, strides)]
            std::vector<TensorRef> parsed;
            parsed.reserve(refs.size());
            for (py::handle h : refs) {
              auto t = h.cast<py::tuple>();
              PyObject* dtype = t[1].ptr();
              if (!THPDtype_Check(dtype)) throw py::type_error("expected a torch.dtype");
              parsed.push_back({t[0].cast<int64_t>(),
                                reinterpret_cast<THPDtype*>(dtype)->scalar_type,
                                t[2].cast<std::vector<int64_t>>(),
                                t[3].cast<std::vector<int64_t>>()});
            }
            py::gil_scoped_release nogil;  // copies can be large
            return r.take(slot, parsed, copy, pinned);
          },
          py::arg("slot"), py::arg("refs"), py::arg("copy"), py::arg("pinned") = false,
          "Tensors for the descriptions a worker sent: views that free the slot when the "
          "last dies, or copies (the slot is freed at once), page-locked with pinned.");
}

}  // namespace ferry
