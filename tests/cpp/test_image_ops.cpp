// PIL's crop, pad, flips and convert("L"), and the tensor stage's arithmetic.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/image_ops.h"
#include "core/tensor_stage.h"
#include "harness.h"
#include "image_checks.h"

using ferry::ColorMode;
using ferry::Image;

namespace {

Image numbered(int w, int h, int c) {
  Image img(w, h, c, c == 1 ? ColorMode::kGray : ColorMode::kRgb);
  for (int y = 0; y < h; ++y) {
    for (int i = 0; i < w * c; ++i) img.row(y)[i] = static_cast<uint8_t>(y * 31 + i);
  }
  return img;
}

}  // namespace

FERRY_TEST(crop_outside_the_image_is_zero) {
  const Image in = numbered(5, 4, 3);
  const Image out = ferry::crop_image(image_checks::copy_rect(in, 0, 0, 5, 4), -2, 1, 6, 5);
  REQUIRE(out.width() == 6 && out.height() == 5);
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 6; ++x) {
      const int sx = x - 2, sy = y + 1;
      for (int c = 0; c < 3; ++c) {
        const int expect = (sx >= 0 && sx < 5 && sy < 4) ? in.row(sy)[sx * 3 + c] : 0;
        EXPECT(out.row(y)[x * 3 + c] == expect, ": at ", x, ",", y);
      }
    }
  }
}

FERRY_TEST(pad_fills_each_channel) {
  const Image in = numbered(3, 2, 3);
  const Image out = ferry::pad_image(in, 1, 2, 3, 0, {7, 8, 9});
  REQUIRE(out.width() == 7 && out.height() == 4);
  EXPECT(out.row(0)[0] == 7 && out.row(0)[1] == 8 && out.row(0)[2] == 9);
  EXPECT(out.row(2)[3] == in.row(0)[0] && out.row(3)[3 * 3 + 2] == in.row(1)[2 * 3 + 2]);
  EXPECT(out.row(3)[6 * 3] == 7);
  // A grayscale-stored RGB image padded with a colour becomes three channels.
  Image gray = Image::filled(2, 2, 1, ColorMode::kRgb, 50);
  const Image colour = ferry::pad_image(gray, 1, 0, 0, 0, {1, 2, 3});
  EXPECT(colour.channels() == 3 && colour.row(0)[3] == 50 && colour.row(0)[2] == 3);
}

FERRY_TEST(flips_mirror_and_undo_themselves) {
  for (int c : {1, 3}) {
    const Image in = numbered(7, 5, c);
    Image h = image_checks::copy_rect(in, 0, 0, 7, 5);
    ferry::flip_horizontal(h);
    EXPECT(h.row(2)[0] == in.row(2)[6 * c]);
    ferry::flip_horizontal(h);
    EXPECT(image_checks::difference(h, in).empty());
    Image v = image_checks::copy_rect(in, 0, 0, 7, 5);
    ferry::flip_vertical(v);
    EXPECT(v.row(0)[3] == in.row(4)[3]);
    ferry::flip_vertical(v);
    EXPECT(image_checks::difference(v, in).empty());
  }
}

FERRY_TEST(grayscale_is_pils_integer_luma) {
  Image in(256, 3, 3, ColorMode::kRgb);
  std::mt19937 rng(8);
  for (int y = 0; y < 3; ++y) {
    for (int i = 0; i < 256 * 3; ++i) in.row(y)[i] = static_cast<uint8_t>(rng());
  }
  const Image l = ferry::to_grayscale(image_checks::copy_rect(in, 0, 0, 256, 3), 1);
  REQUIRE(l.channels() == 1 && l.mode() == ColorMode::kGray);
  for (int x = 0; x < 256; ++x) {
    const uint8_t* p = in.row(1) + 3 * x;
    // ITU-R 601-2 with PIL's 16-bit weights, rounded
    EXPECT(l.row(1)[x] == (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
  }
  const Image l3 = ferry::to_grayscale(image_checks::copy_rect(in, 0, 0, 256, 3), 3);
  EXPECT(l3.mode() == ColorMode::kRgb && l3.mode_channels() == 3);
  // (v, v, v) maps to v: a grayscale-stored image is its own L.
  Image gray = Image::filled(4, 4, 1, ColorMode::kRgb, 77);
  EXPECT(ferry::to_grayscale(std::move(gray), 1).row(3)[3] == 77);
}

FERRY_TEST(tensor_stage_layouts_and_arithmetic) {
  const Image img = numbered(4, 3, 3);
  ferry::TensorStage chw{ferry::TensorLayout::kUint8Chw, {}, {}};
  std::vector<uint8_t> u(4 * 3 * 3);
  ferry::write_tensor(img, chw, u.data());
  EXPECT(u[1 * 12 + 2 * 4 + 3] == img.row(2)[3 * 3 + 1]);
  ferry::TensorStage hwc{ferry::TensorLayout::kUint8Hwc, {}, {}};
  ferry::write_tensor(img, hwc, u.data());
  EXPECT(std::memcmp(u.data() + 12, img.row(1), 12) == 0);

  const std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  const std::vector<float> std = {0.229f, 0.224f, 0.225f};
  ferry::TensorStage norm{ferry::TensorLayout::kFloat32Chw, mean, std};
  std::vector<float> f(4 * 3 * 3);
  ferry::write_tensor(img, norm, f.data());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 3; ++y) {
      for (int x = 0; x < 4; ++x) {
        // volatile: each operation rounded to float, as torch does them one by one
        volatile float v = static_cast<float>(img.row(y)[3 * x + c]) / 255.0f;
        volatile float s = v - mean[c];
        volatile float d = s / std[c];
        EXPECT(f[c * 12 + y * 4 + x] == d);
      }
    }
  }
  // Grayscale-stored RGB is written as three equal channels.
  const Image gray = Image::filled(2, 2, 1, ColorMode::kRgb, 9);
  std::vector<uint8_t> g(12);
  ferry::write_tensor(gray, chw, g.data());
  EXPECT(g[0] == 9 && g[4] == 9 && g[11] == 9);
  // Normalize with the wrong number of means is refused.
  ferry::TensorStage two{ferry::TensorLayout::kFloat32Chw, {0.5f, 0.5f}, {0.5f, 0.5f}};
  bool threw = false;
  try {
    ferry::write_tensor(img, two, f.data());
  } catch (const ferry::ImageError& e) {
    threw = e.kind() == ferry::ImageErrorKind::kBadArgument;
  }
  EXPECT(threw);
}
