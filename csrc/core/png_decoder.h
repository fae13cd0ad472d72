// PNG decoding through the system libpng, to PIL's Image.open(f).convert("RGB") pixels.
// Thread-safe: every call has its own decoder state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "image.h"

namespace ferry {

// True when this build has libpng (FERRY_WITH_PNG); the functions below throw
// kUnsupported otherwise.
bool png_available();
std::string png_version();  // e.g. "libpng 1.6.39"; empty when not available

struct PngInfo {
  int width = 0;
  int height = 0;
  int bit_depth = 0;
  int color_type = 0;  // PNG's: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
  bool interlaced = false;
};

// The chunks up to the image data (throws kCorrupt on a malformed file, kTooLarge on a
// decompression bomb).
PngInfo png_read_info(const uint8_t* data, size_t size);

// The whole image as PIL's convert("RGB") gives it: alpha and tRNS dropped, a palette
// looked up (indices past its end black, as PIL), 16-bit samples reduced to their
// high byte, except 16-bit grayscale, which PIL clips (values over 255 become 255).
// Grayscale files give a 1-channel image of mode kRgb.
Image png_decode(const uint8_t* data, size_t size);

}  // namespace ferry
