// PNG decoding: every colour type and bit depth, interlaced or not, converted to RGB as
// PIL's convert("RGB") does.
#include <png.h>

#include <functional>
#include <random>
#include <vector>

#include "core/png_decoder.h"
#include "harness.h"
#include "image_checks.h"
#include "image_samples.h"

#if defined(FERRY_WITH_PNG)

using ferry::Image;

namespace {

// Rows of random samples for the format, and the RGB (or gray) value PIL gives each pixel.
struct Case {
  int color_type;
  int bit_depth;
  int channels;  // samples per pixel in the file
};

int samples_per_pixel(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return 1;  // palette index
  }
}

// Packs one row of samples (each < 2^bits) as PNG stores them.
std::vector<uint8_t> pack(const std::vector<int>& samples, int bits) {
  std::vector<uint8_t> out;
  if (bits == 16) {
    for (int s : samples) {
      out.push_back(static_cast<uint8_t>(s >> 8));
      out.push_back(static_cast<uint8_t>(s & 0xFF));
    }
    return out;
  }
  int acc = 0, used = 0;
  for (int s : samples) {
    acc = (acc << bits) | s;
    used += bits;
    if (used == 8) {
      out.push_back(static_cast<uint8_t>(acc));
      acc = used = 0;
    }
  }
  if (used > 0) out.push_back(static_cast<uint8_t>(acc << (8 - used)));
  return out;
}

void check_case(int color_type, int bits, bool interlaced, std::mt19937& rng) {
  const int w = 23, h = 11;
  const int spp = samples_per_pixel(color_type);
  const int max = (1 << bits) - 1;
  std::uniform_int_distribution<int> sample(0, max);
  // A palette shorter than the index range: PIL maps the indices past it to black.
  std::vector<uint8_t> palette;
  const int entries = color_type == PNG_COLOR_TYPE_PALETTE ? std::max(1, (max + 1) * 2 / 3) : 0;
  for (int i = 0; i < entries * 3; ++i) {
    palette.push_back(static_cast<uint8_t>(sample(rng) * 37 + i));
  }
  std::vector<std::vector<int>> samples(h, std::vector<int>(size_t(w) * spp));
  std::vector<std::vector<uint8_t>> rows;
  for (auto& row : samples) {
    for (int& s : row) s = sample(rng);
    rows.push_back(pack(row, bits));
  }
  std::vector<uint8_t> trns;
  if (color_type == PNG_COLOR_TYPE_PALETTE) trns = {0, 128};
  if (color_type == PNG_COLOR_TYPE_PALETTE && entries < 2) trns = {0};
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_RGB) trns = {1, 2, 3};
  const auto file =
      image_samples::encode_png(w, h, color_type, bits, interlaced, rows, palette, trns);
  const Image img = ferry::png_decode(file.data(), file.size());
  const bool gray = color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA;
  REQUIRE(img.width() == w && img.height() == h && img.channels() == (gray ? 1 : 3),
          ": type ", color_type, " bits ", bits);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int* s = &samples[y][size_t(x) * spp];
      int expect[3];
      if (color_type == PNG_COLOR_TYPE_PALETTE) {
        for (int c = 0; c < 3; ++c) expect[c] = s[0] < entries ? palette[s[0] * 3 + c] : 0;
      } else if (color_type == PNG_COLOR_TYPE_GRAY && bits == 16) {
        expect[0] = std::min(s[0], 255);  // PIL's I;16 -> RGB clips
      } else {
        for (int c = 0; c < (gray ? 1 : 3); ++c) {
          expect[c] = bits == 16 ? s[c] >> 8 : s[c] * 255 / max;
        }
      }
      for (int c = 0; c < img.channels(); ++c) {
        const int got = img.row(y)[x * img.channels() + c];
        if (got != expect[c]) {
          EXPECT(got == expect[c], ": type ", color_type, " bits ", bits, " interlaced ",
                 interlaced, " at (", x, ", ", y, ") channel ", c, ": ", got, " vs ", expect[c]);
          return;
        }
      }
    }
  }
}

}  // namespace

FERRY_TEST(png_every_colour_type_and_depth) {
  std::mt19937 rng(5);
  const Case cases[] = {
      {PNG_COLOR_TYPE_GRAY, 1, 1},       {PNG_COLOR_TYPE_GRAY, 2, 1},
      {PNG_COLOR_TYPE_GRAY, 4, 1},       {PNG_COLOR_TYPE_GRAY, 8, 1},
      {PNG_COLOR_TYPE_GRAY, 16, 1},      {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 2},
      {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 2}, {PNG_COLOR_TYPE_RGB, 8, 3},
      {PNG_COLOR_TYPE_RGB, 16, 3},       {PNG_COLOR_TYPE_RGB_ALPHA, 8, 4},
      {PNG_COLOR_TYPE_RGB_ALPHA, 16, 4}, {PNG_COLOR_TYPE_PALETTE, 1, 1},
      {PNG_COLOR_TYPE_PALETTE, 2, 1},    {PNG_COLOR_TYPE_PALETTE, 4, 1},
      {PNG_COLOR_TYPE_PALETTE, 8, 1},
  };
  for (const Case& c : cases) {
    for (bool interlaced : {false, true}) check_case(c.color_type, c.bit_depth, interlaced, rng);
  }
}

FERRY_TEST(png_info_reads_the_header) {
  std::vector<std::vector<uint8_t>> rows(5, std::vector<uint8_t>(7 * 3, 9));
  const auto file = image_samples::encode_png(7, 5, PNG_COLOR_TYPE_RGB, 8, false, rows);
  const ferry::PngInfo info = ferry::png_read_info(file.data(), file.size());
  EXPECT(info.width == 7 && info.height == 5 && info.bit_depth == 8 && !info.interlaced);
}

#endif  // FERRY_WITH_PNG
