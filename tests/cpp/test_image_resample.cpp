// PIL's resampling: properties that hold for every filter and size (the pixel-exact
// comparison with Pillow itself is in tests/test_image_core.py).
#include <random>

#include "core/image_ops.h"
#include "core/resample.h"
#include "harness.h"
#include "image_checks.h"

using ferry::ColorMode;
using ferry::Image;
using ferry::ResampleFilter;
using image_checks::difference;

namespace {

Image random_image(int w, int h, int c, uint32_t seed) {
  Image img(w, h, c, ColorMode::kRgb);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y) {
    for (int i = 0; i < w * c; ++i) img.row(y)[i] = static_cast<uint8_t>(rng());
  }
  return img;
}

const ResampleFilter kFilters[] = {ResampleFilter::kNearest, ResampleFilter::kBilinear,
                                   ResampleFilter::kBicubic};

}  // namespace

FERRY_TEST(resample_keeps_a_constant_image_constant) {
  const int sizes[][2] = {{1, 1}, {1, 9}, {9, 1}, {3, 500}, {224, 224}, {37, 23}};
  for (ResampleFilter f : kFilters) {
    for (int c : {1, 3}) {
      Image in = Image::filled(57, 41, c, ColorMode::kRgb, 201);
      for (const auto& s : sizes) {
        const Image out = ferry::resize_image(in, s[0], s[1], f);
        REQUIRE(out.width() == s[0] && out.height() == s[1] && out.channels() == c);
        for (int y = 0; y < out.height(); ++y) {
          for (int i = 0; i < out.width() * c; ++i) {
            if (out.row(y)[i] != 201) {
              EXPECT(out.row(y)[i] == 201, ": filter ", int(f), " size ", s[0], "x", s[1]);
              return;
            }
          }
        }
      }
    }
  }
}

FERRY_TEST(resample_to_the_same_size_is_a_copy) {
  const Image in = random_image(31, 17, 3, 1);
  for (ResampleFilter f : kFilters) {
    EXPECT(difference(ferry::resize_image(in, 31, 17, f), in).empty());
  }
}

FERRY_TEST(resample_reads_a_view_like_a_copy) {
  // A crop inside the image is a view with a stride: the result must not depend on it.
  const Image big = random_image(80, 60, 3, 2);
  const Image view = ferry::crop_image(image_checks::copy_rect(big, 0, 0, 80, 60), 7, 5, 50, 40);
  const Image packed = image_checks::copy_rect(big, 7, 5, 50, 40);
  for (ResampleFilter f : kFilters) {
    for (const auto& s : {std::pair{23, 61}, std::pair{101, 13}}) {
      EXPECT(difference(ferry::resize_image(view, s.first, s.second, f),
                        ferry::resize_image(packed, s.first, s.second, f))
                 .empty());
    }
  }
}

FERRY_TEST(resample_nearest_picks_source_pixels) {
  // Integer downscale by 2: PIL's nearest takes the pixel at 2i + 1 (the centre rounds up).
  const Image in = random_image(10, 6, 1, 3);
  const Image out = ferry::resize_image(in, 5, 3, ResampleFilter::kNearest);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 5; ++x) EXPECT(out.row(y)[x] == in.row(2 * y + 1)[2 * x + 1]);
  }
}

FERRY_TEST(resample_gray_stored_rgb_matches_three_equal_channels) {
  const Image gray = random_image(45, 33, 1, 4);
  Image rgb(45, 33, 3, ColorMode::kRgb);
  for (int y = 0; y < 33; ++y) {
    for (int x = 0; x < 45; ++x) {
      for (int c = 0; c < 3; ++c) rgb.row(y)[3 * x + c] = gray.row(y)[x];
    }
  }
  for (ResampleFilter f : kFilters) {
    const Image a = ferry::resize_image(gray, 20, 70, f);
    const Image b = ferry::resize_image(rgb, 20, 70, f);
    for (int y = 0; y < 70; ++y) {
      for (int x = 0; x < 20; ++x) {
        for (int c = 0; c < 3; ++c) EXPECT(a.row(y)[x] == b.row(y)[3 * x + c]);
      }
    }
  }
}

FERRY_TEST(resample_rejects_empty_sizes) {
  const Image in = random_image(4, 4, 3, 5);
  bool threw = false;
  try {
    (void)ferry::resize_image(in, 0, 3, ResampleFilter::kBilinear);
  } catch (const ferry::ImageError& e) {
    threw = e.kind() == ferry::ImageErrorKind::kBadArgument;
  }
  EXPECT(threw);
}
