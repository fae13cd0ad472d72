// An 8-bit image on the CPU: PIL's "RGB" or "L" pixels, channels interleaved, and the
// errors image code raises. Not thread-safe: one sample's image belongs to one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "check.h"

namespace ferry {

// PIL refuses an image of more than 2 * Image.MAX_IMAGE_PIXELS pixels (89,478,485) with a
// DecompressionBombError; ferry refuses the same, before allocating anything for it.
constexpr int64_t kMaxImagePixels = 2 * int64_t{89478485};

enum class ImageErrorKind {
  kIo,           // the file cannot be read (errno() says why)
  kUnsupported,  // not a format this build decodes: the caller may try PIL
  kCorrupt,      // truncated or malformed data
  kTooLarge,     // over kMaxImagePixels (a decompression bomb)
  kBadArgument,  // an op that cannot apply (bad sizes, mean/std of the wrong length)
  kInternal,     // anything else (out of memory, a bug)
};

class ImageError : public Error {
 public:
  ImageError(ImageErrorKind kind, const std::string& what, int sys_errno = 0)
      : Error(what), kind_(kind), errno_(sys_errno) {}
  ImageErrorKind kind() const { return kind_; }
  int sys_errno() const { return errno_; }

 private:
  ImageErrorKind kind_;
  int errno_;
};

// Throws kTooLarge when width x height is over kMaxImagePixels (and kCorrupt when a side
// is not positive), with PIL's figures in the message.
void check_image_size(int64_t width, int64_t height);

// PIL's mode: kRgb ("RGB") or kGray ("L"). An image of mode kRgb may store one channel:
// then its three channels are equal (a grayscale file), which every op preserves, and the
// channels are replicated only when the final tensor is written.
enum class ColorMode { kRgb, kGray };

class Image {
 public:
  Image() = default;
  // Uninitialised pixels, `channels` (1 or 3) per pixel, rows packed.
  Image(int width, int height, int channels, ColorMode mode);
  // The same, every byte `fill`.
  static Image filled(int width, int height, int channels, ColorMode mode, uint8_t fill);

  Image(Image&&) noexcept = default;
  Image& operator=(Image&&) noexcept = default;

  int width() const { return width_; }
  int height() const { return height_; }
  int channels() const { return channels_; }  // stored: 1 or 3
  ColorMode mode() const { return mode_; }
  int mode_channels() const { return mode_ == ColorMode::kRgb ? 3 : 1; }  // as PIL sees it
  ptrdiff_t stride() const { return stride_; }  // bytes from one row to the next
  bool empty() const { return data_ == nullptr; }

  uint8_t* row(int y) { return data_ + y * stride_; }
  const uint8_t* row(int y) const { return data_ + y * stride_; }

  // Narrows the image to the rectangle (no copy); the rectangle must lie inside it.
  void narrow(int left, int top, int width, int height);
  // What a grayscale-stored image of mode kRgb is as PIL converts it to "L": itself.
  void set_mode(ColorMode mode) { mode_ = mode; }

 private:
  std::unique_ptr<uint8_t[]> storage_;
  uint8_t* data_ = nullptr;
  int width_ = 0;
  int height_ = 0;
  int channels_ = 0;
  ColorMode mode_ = ColorMode::kRgb;
  ptrdiff_t stride_ = 0;
};

}  // namespace ferry
