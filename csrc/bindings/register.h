// One register_<topic>() per bindings file; module.cpp calls them all.
#pragma once

#include <torch/extension.h>

namespace ferry {
class DeviceTransfer;

// A transfer's copy stream as (stream_id, device_index, device_type), what
// torch.cuda.Stream(stream_id=..., device_index=..., device_type=...) takes (for tests).
pybind11::tuple copy_stream_of(const DeviceTransfer& transfer);

void register_gather(pybind11::module_& m);
void register_image(pybind11::module_& m);
void register_backend(pybind11::module_& m);
void register_device(pybind11::module_& m);
void register_shared_ring(pybind11::module_& m);
void register_transforms(pybind11::module_& m);
}  // namespace ferry
