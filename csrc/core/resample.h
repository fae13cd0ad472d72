// PIL's Image.resize, pixel for pixel: the antialiased separable resampling of Pillow's
// Resample.c (two passes, each rounded to 8 bits, in PIL's fixed-point arithmetic; in
// Pillow 13's order: horizontal first unless the height shrinks by more than twice what
// the width does, python-pillow/Pillow#9549) for BILINEAR and BICUBIC, and PIL's
// nearest-neighbour scaling for NEAREST.
// Thread-safe (pure functions).
#pragma once

#include "image.h"

namespace ferry {

// PIL's Image.Resampling codes.
enum class ResampleFilter { kNearest = 0, kBilinear = 2, kBicubic = 3 };

// True for a code resize_image accepts.
bool is_supported_filter(int code);

// The region of the source to resample, in source pixels, as PIL's `box` (C floats there).
struct ResampleBox {
  float left;
  float top;
  float right;
  float bottom;
};

// PIL's image.resize((width, height), filter, box); the whole image when box is null. The
// result has the source's mode and stored channels.
Image resize_image(const Image& in, int width, int height, ResampleFilter filter,
                   const ResampleBox* box = nullptr);

}  // namespace ferry
