#include "image_ops.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace ferry {
namespace {

[[noreturn]] void bad_argument(const std::string& what) {
  throw ImageError(ImageErrorKind::kBadArgument, what);
}

bool uniform(const std::array<uint8_t, 3>& fill) {
  return fill[0] == fill[1] && fill[1] == fill[2];
}

// A grayscale-stored RGB image as three stored channels (needed once channels differ).
Image expand_channels(const Image& in) {
  Image out(in.width(), in.height(), 3, ColorMode::kRgb);
  for (int y = 0; y < in.height(); ++y) {
    const uint8_t* src = in.row(y);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < in.width(); ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
  }
  return out;
}

Image filled_like(const Image& in, int width, int height, const std::array<uint8_t, 3>& fill) {
  if (in.channels() == 1) return Image::filled(width, height, 1, in.mode(), fill[0]);
  if (uniform(fill)) return Image::filled(width, height, 3, in.mode(), fill[0]);
  Image out(width, height, 3, in.mode());
  for (int y = 0; y < height; ++y) {
    uint8_t* dst = out.row(y);
    for (int x = 0; x < width; ++x) std::memcpy(dst + 3 * x, fill.data(), 3);
  }
  return out;
}

// Copies `in` into `out` with its top-left corner at (left, top) of `out`, clipped.
void paste(const Image& in, Image& out, int left, int top) {
  const int x0 = std::max(0, left);
  const int y0 = std::max(0, top);
  const int x1 = std::min(out.width(), left + in.width());
  const int y1 = std::min(out.height(), top + in.height());
  if (x0 >= x1 || y0 >= y1) return;
  const int c = out.channels();
  for (int y = y0; y < y1; ++y) {
    std::memcpy(out.row(y) + static_cast<ptrdiff_t>(x0) * c,
                in.row(y - top) + static_cast<ptrdiff_t>(x0 - left) * c,
                static_cast<size_t>(x1 - x0) * c);
  }
}

}  // namespace

Image crop_image(Image in, int left, int top, int width, int height) {
  if (width <= 0 || height <= 0) {
    bad_argument("crop of " + std::to_string(width) + "x" + std::to_string(height) +
                 " pixels: height and width must be > 0");
  }
  if (left >= 0 && top >= 0 && left + width <= in.width() && top + height <= in.height()) {
    in.narrow(left, top, width, height);
    return in;
  }
  Image out = Image::filled(width, height, in.channels(), in.mode(), 0);
  paste(in, out, -left, -top);
  return out;
}

Image pad_image(const Image& in, int left, int top, int right, int bottom,
                const std::array<uint8_t, 3>& fill) {
  if (left < 0 || top < 0 || right < 0 || bottom < 0) {
    bad_argument("padding must not be negative");
  }
  const int64_t width = int64_t{in.width()} + left + right;
  const int64_t height = int64_t{in.height()} + top + bottom;
  check_image_size(width, height);
  if (in.channels() == 1 && in.mode() == ColorMode::kRgb && !uniform(fill)) {
    return pad_image(expand_channels(in), left, top, right, bottom, fill);
  }
  Image out = filled_like(in, static_cast<int>(width), static_cast<int>(height), fill);
  paste(in, out, left, top);
  return out;
}

void flip_horizontal(Image& image) {
  const int c = image.channels();
  const int w = image.width();
  for (int y = 0; y < image.height(); ++y) {
    uint8_t* row = image.row(y);
    for (int a = 0, b = w - 1; a < b; ++a, --b) {
      for (int ch = 0; ch < c; ++ch) std::swap(row[a * c + ch], row[b * c + ch]);
    }
  }
}

void flip_vertical(Image& image) {
  const size_t bytes = static_cast<size_t>(image.width()) * image.channels();
  for (int a = 0, b = image.height() - 1; a < b; ++a, --b) {
    std::swap_ranges(image.row(a), image.row(a) + bytes, image.row(b));
  }
}

Image to_grayscale(Image in, int channels) {
  if (channels != 1 && channels != 3) {
    bad_argument("Grayscale gives 1 or 3 channels, not " + std::to_string(channels));
  }
  const ColorMode mode = channels == 1 ? ColorMode::kGray : ColorMode::kRgb;
  // One stored channel already holds L: PIL's formula maps (v, v, v) to v.
  if (in.channels() == 1) {
    in.set_mode(mode);
    return in;
  }
  Image out(in.width(), in.height(), 1, mode);
  for (int y = 0; y < in.height(); ++y) {
    const uint8_t* src = in.row(y);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < in.width(); ++x) {
      const uint8_t* p = src + 3 * x;
      dst[x] = static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
    }
  }
  return out;
}

}  // namespace ferry
