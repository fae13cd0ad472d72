// JPEG decoding through the system libjpeg-turbo with PIL's settings, to PIL's
// Image.open(f).convert("RGB") pixels. Thread-safe: every call has its own decoder state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "image.h"

namespace ferry {

// True when this build has libjpeg (FERRY_WITH_JPEG); the functions below throw
// kUnsupported otherwise.
bool jpeg_available();
std::string jpeg_version();  // e.g. "libjpeg-turbo 2.1.5"; empty when not available

struct JpegInfo {
  int width = 0;
  int height = 0;
  int components = 0;  // 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK
};

// A rectangle of the decoded (possibly DCT-scaled) image.
struct PixelRect {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

struct JpegOptions {
  // PIL's settings. The fast mode (declared inexact) uses the fast integer IDCT and plain
  // chroma upsampling, and may scale in the DCT domain by scale_eighths / 8 (1 to 8).
  int scale_eighths = 8;
  bool fast = false;
  // The rectangle to decode, in scaled coordinates; width 0: the whole image. Only the
  // rows and iMCU columns it needs are decoded, with pixels identical to a full decode.
  PixelRect region;
};

// The header only (throws kCorrupt on a malformed one, kTooLarge on a decompression bomb).
JpegInfo jpeg_read_info(const uint8_t* data, size_t size);

// Size of the image decoded with scale_eighths / 8 DCT scaling (libjpeg's rounding up).
int jpeg_scaled_length(int length, int scale_eighths);

// The image (or options.region of it) as PIL's convert("RGB") gives it: YCbCr and RGB
// files as libjpeg converts them, CMYK/YCCK inverted (PIL assumes Adobe's convention) then
// PIL's CMYK->RGB, grayscale files as a 1-channel image of mode kRgb.
Image jpeg_decode(const uint8_t* data, size_t size, const JpegOptions& options);

}  // namespace ferry
