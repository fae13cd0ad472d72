#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "../torch/gather_loader.h"
#include "register.h"

namespace py = pybind11;

namespace ferry {
namespace {

constexpr double kSignalCheckSeconds = 0.05;

// An index torch would treat as a plain integer; nullopt for anything else (bool, float,
// slice, ...), which then takes torch's own path and gets torch's own behaviour.
std::optional<int64_t> as_plain_index(PyObject* obj) {
  if (PyBool_Check(obj) || !PyIndex_Check(obj)) return std::nullopt;
  // A one-element tensor has __index__ too, but torch indexes with its shape kept, and a
  // uint8 or bool tensor is a mask to torch: only a 0-d tensor of another integer type
  // is an index.
  if (THPVariable_Check(obj)) {
    const at::Tensor& t = THPVariable_Unpack(obj);
    const at::ScalarType type = t.scalar_type();
    if (t.dim() != 0 || !at::isIntegralType(type, /*includeBool=*/false) ||
        type == at::kByte) {
      return std::nullopt;
    }
  }
  int overflow = 0;
  long long v;
  if (PyLong_CheckExact(obj)) {
    v = PyLong_AsLongLongAndOverflow(obj, &overflow);
  } else {
    PyObject* as_int = PyNumber_Index(obj);
    if (as_int == nullptr) {
      PyErr_Clear();
      return std::nullopt;
    }
    v = PyLong_AsLongLongAndOverflow(as_int, &overflow);
    Py_DECREF(as_int);
  }
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return std::nullopt;
  }
  return static_cast<int64_t>(v);
}

std::optional<std::vector<int64_t>> as_index_batch(py::handle obj, bool unbatched) {
  if (unbatched) {
    auto i = as_plain_index(obj.ptr());
    if (!i) return std::nullopt;
    return std::vector<int64_t>{*i};
  }
  if (THPVariable_Check(obj.ptr())) {  // a stock sampler's batch, drawn as a tensor
    const at::Tensor& t = THPVariable_Unpack(obj.ptr());
    if (t.dim() != 1 || t.scalar_type() != at::kLong || !t.device().is_cpu()) {
      return std::nullopt;
    }
    const at::Tensor dense = t.contiguous();
    const int64_t* p = dense.data_ptr<int64_t>();
    return std::vector<int64_t>(p, p + dense.numel());
  }
  if (!PyList_Check(obj.ptr()) && !PyTuple_Check(obj.ptr())) return std::nullopt;
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (Py_ssize_t k = 0; k < n; ++k) {
    auto i = as_plain_index(items[k]);
    if (!i) return std::nullopt;
    out[k] = *i;
  }
  return out;
}

at::ScalarType as_dtype(py::handle obj) {
  if (!THPDtype_Check(obj.ptr())) throw py::type_error("expected a torch.dtype");
  return reinterpret_cast<THPDtype*>(obj.ptr())->scalar_type;
}

}  // namespace

void register_gather(py::module_& m) {
  py::class_<IndexPlan>(m, "IndexPlan",
                        "Dataset index -> (leaf, row) through Subset/ConcatDataset layers.")
      .def(py::init<>())
      .def("add_leaf", &IndexPlan::add_leaf, py::arg("leaf"), py::arg("rows"))
      .def("add_subset", &IndexPlan::add_subset, py::arg("child"), py::arg("indices"))
      .def("add_concat", &IndexPlan::add_concat, py::arg("children"))
      .def("__len__", &IndexPlan::length);

  py::class_<GatherLoader>(m, "GatherLoader",
                           "Gathers batches of rows from arrays into staging slots in C++ "
                           "threads. One consumer thread.")
      .def(py::init([](IndexPlan plan, const py::list& leaves, const py::list& columns,
                       size_t num_threads, size_t max_in_flight, bool pinned, bool in_order,
                       bool unbatched, std::optional<c10::Device> device,
                       std::shared_ptr<MemoryBudget> budget) {
             // leaves[l][c] = (data_ptr, shape, byte_strides, itemsize); columns[c] =
             // (dtype, row_shape). The caller keeps the arrays alive.
             std::vector<std::vector<StridedArray>> arrays;
             for (py::handle leaf : leaves) {
               auto& cols = arrays.emplace_back();
               for (py::handle a : leaf) {
                 auto t = a.cast<py::tuple>();
                 cols.emplace_back(reinterpret_cast<const void*>(t[0].cast<uintptr_t>()),
                                   t[1].cast<std::vector<int64_t>>(),
                                   t[2].cast<std::vector<int64_t>>(), t[3].cast<int64_t>());
               }
             }
             std::vector<ColumnSpec> specs;
             for (py::handle c : columns) {
               auto t = c.cast<py::tuple>();
               specs.push_back({as_dtype(t[0]), t[1].cast<std::vector<int64_t>>()});
             }
             GatherOptions opts;
             opts.num_threads = num_threads;
             opts.max_in_flight = max_in_flight;
             opts.pinned = pinned;
             opts.in_order = in_order;
             opts.unbatched = unbatched;
             opts.device = device;
             opts.budget = std::move(budget);
             return std::make_unique<GatherLoader>(std::move(plan), std::move(arrays),
                                                   std::move(specs), opts);
           }),
           py::arg("plan"), py::arg("leaves"), py::arg("columns"), py::arg("num_threads"),
           py::arg("max_in_flight"), py::arg("pinned"), py::arg("in_order"),
           py::arg("unbatched"), py::arg("device") = py::none(),
           py::arg("budget") = py::none())
      .def(
          "submit",
          [](GatherLoader& g, py::handle indices) -> py::tuple {
            auto batch = as_index_batch(indices, g.options().unbatched);
            // Indices that are not plain integers still take a place in line (an empty
            // batch, which comes back rejected): the caller fetches them through torch.
            const bool plain = batch.has_value();
            const int64_t seq = g.submit(plain ? std::move(*batch) : std::vector<int64_t>{});
            return py::make_tuple(seq, plain);
          },
          py::arg("indices"),
          "Queues a batch of indices (ints, or a 1-D int64 CPU tensor); returns (seq, plain). "
          "When the indices are not plain integers (plain is False) the batch comes back "
          "rejected, in its place.")
      .def(
          "next",
          [](GatherLoader& g, double timeout_s) -> py::object {
            // Wait in short slices so that Ctrl-C reaches Python promptly.
            using Clock = std::chrono::steady_clock;
            const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
            std::optional<Batch> batch;
            for (;;) {
              double slice = kSignalCheckSeconds;
              if (timeout_s > 0) {
                const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
                if (left <= 0) return py::none();
                slice = std::min(slice, left);
              }
              {
                py::gil_scoped_release nogil;
                batch = g.wait(slice);
              }
              if (batch) break;
              if (PyErr_CheckSignals() != 0) throw py::error_already_set();
            }
            DeliveredBatch out = g.deliver(std::move(*batch));
            py::object columns = py::none();
            py::object indices = py::none();  // a list of 256 ints costs ~3 us: when needed
            if (!out.columns.empty() || (out.rejected_position < 0 && out.error.empty())) {
              columns = py::cast(std::move(out.columns));
            }
            if (columns.is_none() || !out.error.empty()) {
              indices = py::cast(std::move(out.indices));
            }
            return py::make_tuple(out.seq, columns, out.rejected_position, out.error,
                                  out.gather_seconds, indices, out.transfer_seconds);
          },
          py::arg("timeout_s"),
          "Waits for the next batch (timeout_s <= 0: no limit): (seq, [tensors] or None, "
          "rejected_position, error, gather_seconds, indices, transfer_seconds); None on "
          "timeout. indices (the batch's, as submitted) only with an error or no tensors.")
      .def("close", &GatherLoader::close, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("in_flight", &GatherLoader::in_flight)
      .def_property_readonly("num_threads",
                             [](const GatherLoader& g) { return g.options().num_threads; })
      .def_property_readonly("max_in_flight",
                             [](const GatherLoader& g) { return g.options().max_in_flight; })
      .def_property_readonly("copy_stream",
                             [](const GatherLoader& g) -> py::object {
                               if (g.transfer() == nullptr) return py::none();
                               return copy_stream_of(*g.transfer());
                             })
      .def_property_readonly("ring_slots", [](const GatherLoader& g) { return g.ring().slots(); })
      .def_property_readonly("ring_bytes", [](const GatherLoader& g) { return g.ring().bytes(); })
      .def_property_readonly("ring_untracked_allocations",
                             [](const GatherLoader& g) { return g.ring().untracked_allocations(); })
      .def_property_readonly("ring_copy_waits",
                             [](const GatherLoader& g) { return g.ring().copy_waits(); });
}

}  // namespace ferry
