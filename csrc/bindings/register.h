// One register_<topic>() per bindings file; module.cpp calls them all.
#pragma once

#include <torch/extension.h>

namespace ferry {
void register_gather(pybind11::module_& m);
void register_backend(pybind11::module_& m);
void register_shared_ring(pybind11::module_& m);
void register_transforms(pybind11::module_& m);
}  // namespace ferry
