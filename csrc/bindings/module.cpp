#include "register.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "ferry's C++ core: staging ring, native gather, image pipeline, transfers";
  ferry::register_backend(m);
  ferry::register_device(m);
  ferry::register_gather(m);
  ferry::register_image(m);
  ferry::register_shared_ring(m);
  ferry::register_transforms(m);
}
