// Helpers shared by the image tests.
#pragma once

#include <cstring>
#include <string>

#include "core/image.h"
#include "harness.h"

namespace image_checks {

// A copy of the rectangle of `image` (rows packed).
inline ferry::Image copy_rect(const ferry::Image& image, int left, int top, int width, int height) {
  ferry::Image out(width, height, image.channels(), image.mode());
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.row(y), image.row(top + y) + left * image.channels(),
                static_cast<size_t>(width) * image.channels());
  }
  return out;
}

// Empty when equal, else where they first differ.
inline std::string difference(const ferry::Image& a, const ferry::Image& b) {
  if (a.width() != b.width() || a.height() != b.height() || a.channels() != b.channels() ||
      a.mode() != b.mode()) {
    return harness::str("shapes ", a.width(), "x", a.height(), "x", a.channels(), " vs ",
                        b.width(), "x", b.height(), "x", b.channels());
  }
  for (int y = 0; y < a.height(); ++y) {
    for (int i = 0; i < a.width() * a.channels(); ++i) {
      if (a.row(y)[i] != b.row(y)[i]) {
        return harness::str("differ at row ", y, " byte ", i, ": ", int(a.row(y)[i]), " vs ",
                            int(b.row(y)[i]));
      }
    }
  }
  return {};
}

}  // namespace image_checks
