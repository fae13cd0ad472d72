// PIL's geometric and colour operations on an Image, with PIL's pixels: crop, pad,
// flips, convert("L"). Thread-safe (pure functions of their arguments).
#pragma once

#include <array>
#include <cstdint>

#include "image.h"

namespace ferry {

// PIL's image.crop((left, top, left + width, top + height)): the part outside the image is
// 0. Inside the image it is a view of `in` (no copy).
Image crop_image(Image in, int left, int top, int width, int height);

// ImageOps.expand(image, (left, top, right, bottom), fill): a border of `fill` (one value
// per channel of the image's mode; torchvision repeats an int fill over the channels).
Image pad_image(const Image& in, int left, int top, int right, int bottom,
                const std::array<uint8_t, 3>& fill);

// Image.transpose(FLIP_LEFT_RIGHT) and (FLIP_TOP_BOTTOM), in place.
void flip_horizontal(Image& image);
void flip_vertical(Image& image);

// PIL's convert("L") (ITU-R 601-2 luma, PIL's integer rounding): one channel. With
// `channels` 3 the result is that L replicated to RGB, as torchvision's Grayscale(3).
Image to_grayscale(Image in, int channels);

}  // namespace ferry
