#include "image.h"

#include <cstring>
#include <new>

namespace ferry {

void check_image_size(int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) {
    throw ImageError(ImageErrorKind::kCorrupt, "invalid image size " + std::to_string(width) +
                                                   "x" + std::to_string(height));
  }
  // Both sides come from 32-bit header fields: the product fits in 64 bits.
  const int64_t pixels = width * height;
  if (pixels > kMaxImagePixels) {
    throw ImageError(ImageErrorKind::kTooLarge,
                     "image size (" + std::to_string(pixels) + " pixels) exceeds limit of " +
                         std::to_string(kMaxImagePixels) +
                         " pixels, could be decompression bomb DOS attack (refused as PIL's "
                         "DecompressionBombError)");
  }
}

Image::Image(int width, int height, int channels, ColorMode mode)
    : width_(width), height_(height), channels_(channels), mode_(mode) {
  FERRY_CHECK(channels == 1 || channels == 3, "an image has 1 or 3 channels, not ", channels);
  FERRY_CHECK(mode == ColorMode::kRgb || channels == 1, "an L image has one channel");
  check_image_size(width, height);
  stride_ = static_cast<ptrdiff_t>(width) * channels;
  storage_.reset(new uint8_t[static_cast<size_t>(stride_) * static_cast<size_t>(height)]);
  data_ = storage_.get();
}

Image Image::filled(int width, int height, int channels, ColorMode mode, uint8_t fill) {
  Image image(width, height, channels, mode);
  std::memset(image.data_, fill, static_cast<size_t>(image.stride_) * height);
  return image;
}

void Image::narrow(int left, int top, int width, int height) {
  FERRY_CHECK(left >= 0 && top >= 0 && width > 0 && height > 0 && left + width <= width_ &&
                  top + height <= height_,
              "narrowing ", width_, "x", height_, " to ", width, "x", height, " at (", left,
              ", ", top, ")");
  data_ += top * stride_ + static_cast<ptrdiff_t>(left) * channels_;
  width_ = width;
  height_ = height;
}

}  // namespace ferry
