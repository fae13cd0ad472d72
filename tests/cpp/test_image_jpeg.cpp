// JPEG decoding: region decodes give exactly the pixels of a full decode, for every
// sampling, progressive or not, gray, CMYK/YCCK, restart markers, DCT scaling.
#include <random>
#include <vector>

#include "core/jpeg_decoder.h"
#include "harness.h"
#include "image_checks.h"
#include "image_samples.h"

#if defined(FERRY_WITH_JPEG)

using ferry::Image;
using ferry::JpegOptions;
using ferry::PixelRect;
using image_checks::copy_rect;
using image_checks::difference;
using image_samples::JpegSpec;

namespace {

struct Config {
  const char* name;
  int channels;
  JpegSpec spec;
};

std::vector<Config> configs() {
  std::vector<Config> out;
  const int samplings[][2] = {{2, 2}, {2, 1}, {1, 2}, {1, 1}, {4, 1}};
  for (const auto& s : samplings) {
    for (bool progressive : {false, true}) {
      JpegSpec spec;
      spec.h_samp = s[0];
      spec.v_samp = s[1];
      spec.progressive = progressive;
      out.push_back({"rgb", 3, spec});
    }
  }
  JpegSpec restarts;
  restarts.restart_rows = 1;
  out.push_back({"rgb restart markers", 3, restarts});
  out.push_back({"gray", 1, JpegSpec{}});
  JpegSpec gray_progressive;
  gray_progressive.progressive = true;
  out.push_back({"gray progressive", 1, gray_progressive});
  out.push_back({"cmyk", 4, JpegSpec{}});
  JpegSpec ycck;
  ycck.ycck = true;
  out.push_back({"ycck", 4, ycck});
  return out;
}

// Random rectangles, plus ones that touch each edge and the whole image.
std::vector<PixelRect> rects(int w, int h, std::mt19937& rng, int count) {
  std::vector<PixelRect> out = {{0, 0, w, h}, {0, 0, 1, 1}, {w - 1, h - 1, 1, 1}, {0, h / 2, w, 1}};
  for (int i = 0; i < count; ++i) {
    const int rw = std::uniform_int_distribution<int>(1, w)(rng);
    const int rh = std::uniform_int_distribution<int>(1, h)(rng);
    const int x = std::uniform_int_distribution<int>(0, w - rw)(rng);
    const int y = std::uniform_int_distribution<int>(0, h - rh)(rng);
    out.push_back({x, y, rw, rh});
  }
  return out;
}

void check_regions(const std::vector<uint8_t>& file, bool fast, int eighths, const char* what,
                   std::mt19937& rng) {
  JpegOptions whole;
  whole.fast = fast;
  whole.scale_eighths = eighths;
  const Image full = ferry::jpeg_decode(file.data(), file.size(), whole);
  for (const PixelRect& r : rects(full.width(), full.height(), rng, 40)) {
    JpegOptions part = whole;
    part.region = r;
    const Image got = ferry::jpeg_decode(file.data(), file.size(), part);
    const std::string diff = difference(got, copy_rect(full, r.left, r.top, r.width, r.height));
    EXPECT(diff.empty(), ": ", what, " fast=", fast, " ", eighths, "/8 region ", r.width, "x",
           r.height, " at (", r.left, ", ", r.top, "): ", diff);
    if (!diff.empty()) return;
  }
}

}  // namespace

FERRY_TEST(jpeg_region_decode_matches_full_decode) {
  std::mt19937 rng(1234);
  const int sizes[][2] = {{203, 157}, {64, 48}, {1, 37}, {37, 1}, {250, 9}};
  for (const Config& c : configs()) {
    for (const auto& size : sizes) {
      const auto pixels = image_samples::synthetic(size[0], size[1], c.channels, 7);
      const auto file = image_samples::encode_jpeg(pixels, c.spec);
      check_regions(file, false, 8, c.name, rng);
    }
  }
}

FERRY_TEST(jpeg_region_decode_matches_full_decode_scaled_fast) {
  std::mt19937 rng(99);
  for (const Config& c : configs()) {
    const auto pixels = image_samples::synthetic(211, 163, c.channels, 3);
    const auto file = image_samples::encode_jpeg(pixels, c.spec);
    for (int eighths : {8, 7, 5, 4, 3, 2, 1}) check_regions(file, true, eighths, c.name, rng);
  }
}

FERRY_TEST(jpeg_decodes_to_pil_modes) {
  const auto rgb = image_samples::encode_jpeg(image_samples::synthetic(40, 30, 3, 1), JpegSpec{});
  const Image a = ferry::jpeg_decode(rgb.data(), rgb.size(), JpegOptions{});
  EXPECT(a.width() == 40 && a.height() == 30 && a.channels() == 3);
  EXPECT(a.mode() == ferry::ColorMode::kRgb);
  const auto gray = image_samples::encode_jpeg(image_samples::synthetic(40, 30, 1, 1), JpegSpec{});
  const Image g = ferry::jpeg_decode(gray.data(), gray.size(), JpegOptions{});
  EXPECT(g.channels() == 1 && g.mode() == ferry::ColorMode::kRgb, ": gray files stay one channel");
  const auto cmyk = image_samples::encode_jpeg(image_samples::synthetic(40, 30, 4, 1), JpegSpec{});
  const Image k = ferry::jpeg_decode(cmyk.data(), cmyk.size(), JpegOptions{});
  EXPECT(k.channels() == 3);
  const ferry::JpegInfo info = ferry::jpeg_read_info(cmyk.data(), cmyk.size());
  EXPECT(info.width == 40 && info.height == 30 && info.components == 4);
}

FERRY_TEST(jpeg_scaled_sizes_round_up) {
  const auto pixels = image_samples::synthetic(203, 157, 3, 2);
  const auto file = image_samples::encode_jpeg(pixels, JpegSpec{});
  for (int eighths : {1, 2, 3, 4, 5, 6, 7}) {
    JpegOptions o;
    o.fast = true;
    o.scale_eighths = eighths;
    const Image img = ferry::jpeg_decode(file.data(), file.size(), o);
    EXPECT(img.width() == (203 * eighths + 7) / 8 && img.height() == (157 * eighths + 7) / 8);
    EXPECT(img.width() == ferry::jpeg_scaled_length(203, eighths));
  }
}

#endif  // FERRY_WITH_JPEG
