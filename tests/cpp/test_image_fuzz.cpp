// Untrusted files: truncations, bit flips, random headers and decompression bombs fed to
// the decoders (run under ASan/UBSan by `make sanitize`). Every input must end in an image
// or an ImageError, promptly; a header over the pixel limit is refused before anything is
// allocated for it (ASan would fail a multi-gigabyte allocation). Deterministic seeds,
// bounded iterations.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "core/image_file.h"
#include "core/image_pipeline.h"
#include "core/jpeg_decoder.h"
#include "core/png_decoder.h"
#include "harness.h"
#include "image_samples.h"

#if defined(FERRY_WITH_JPEG) && defined(FERRY_WITH_PNG)
#include <png.h>

using ferry::ImageError;
using ferry::ImageErrorKind;
using Bytes = std::vector<uint8_t>;

namespace {

std::vector<Bytes> jpeg_corpus() {
  std::vector<Bytes> out;
  image_samples::JpegSpec spec;
  out.push_back(image_samples::encode_jpeg(image_samples::synthetic(61, 45, 3, 1), spec));
  spec.progressive = true;
  out.push_back(image_samples::encode_jpeg(image_samples::synthetic(48, 40, 3, 2), spec));
  spec.progressive = false;
  spec.restart_rows = 1;
  spec.h_samp = 1;
  out.push_back(image_samples::encode_jpeg(image_samples::synthetic(33, 50, 3, 3), spec));
  out.push_back(image_samples::encode_jpeg(image_samples::synthetic(40, 24, 1, 4), {}));
  out.push_back(image_samples::encode_jpeg(image_samples::synthetic(24, 40, 4, 5), {}));
  return out;
}

std::vector<Bytes> png_corpus() {
  std::vector<Bytes> out;
  for (int type : {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_PALETTE}) {
    for (bool interlaced : {false, true}) {
      const int spp = type == PNG_COLOR_TYPE_RGB ? 3 : 1;
      const auto pixels = image_samples::synthetic(37, 29, spp, static_cast<uint32_t>(type));
      std::vector<std::vector<uint8_t>> rows;
      for (int y = 0; y < 29; ++y) {
        rows.emplace_back(pixels.data.begin() + size_t(y) * 37 * spp,
                          pixels.data.begin() + size_t(y + 1) * 37 * spp);
      }
      Bytes palette(256 * 3);
      for (size_t i = 0; i < palette.size(); ++i) palette[i] = static_cast<uint8_t>(i * 7);
      out.push_back(image_samples::encode_png(37, 29, type, 8, interlaced, rows,
                                              type == PNG_COLOR_TYPE_PALETTE ? palette : Bytes{}));
    }
  }
  return out;
}

// Decodes every way the pipeline does; returns whether an ImageError ended it.
bool decode_jpeg(const Bytes& b) {
  try {
    const ferry::JpegInfo info = ferry::jpeg_read_info(b.data(), b.size());
    (void)ferry::jpeg_decode(b.data(), b.size(), {});
    ferry::JpegOptions region;
    region.region = {info.width / 3, info.height / 2, std::max(1, info.width / 2), 1};
    (void)ferry::jpeg_decode(b.data(), b.size(), region);
    ferry::JpegOptions fast;
    fast.fast = true;
    fast.scale_eighths = 3;
    (void)ferry::jpeg_decode(b.data(), b.size(), fast);
  } catch (const ImageError&) {
    return true;
  }
  return false;
}

bool decode_png(const Bytes& b) {
  try {
    (void)ferry::png_read_info(b.data(), b.size());
    (void)ferry::png_decode(b.data(), b.size());
  } catch (const ImageError&) {
    return true;
  }
  return false;
}

// Rewrites every chunk's CRC, so that libpng reads the damaged content itself.
void fix_png_crcs(Bytes& b) {
  size_t pos = 8;
  while (pos + 12 <= b.size()) {
    const uint32_t length =
        (uint32_t(b[pos]) << 24) | (b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3];
    if (length > b.size() - pos - 12) return;
    const uint32_t crc = static_cast<uint32_t>(crc32(0, b.data() + pos + 4, length + 4));
    for (int i = 0; i < 4; ++i) b[pos + 8 + length + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    pos += 12 + length;
  }
}

size_t find_marker(const Bytes& b, uint8_t marker) {
  for (size_t i = 0; i + 1 < b.size(); ++i) {
    if (b[i] == 0xFF && b[i + 1] == marker) return i;
  }
  return b.size();
}

}  // namespace

FERRY_TEST(fuzz_jpeg_truncations_are_errors) {
  for (const Bytes& file : jpeg_corpus()) {
    REQUIRE(!decode_jpeg(file), ": the untruncated file decodes");
    const size_t step = std::max<size_t>(1, file.size() / 150);
    for (size_t n = 0; n + 2 < file.size(); n += step) {
      const Bytes cut(file.begin(), file.begin() + n);
      const bool failed = decode_jpeg(cut);
      // Everything up to the last scan's data is needed: PIL raises "truncated" too.
      if (n + 8 < file.size()) EXPECT(failed, ": truncated to ", n, " of ", file.size(), " bytes");
    }
  }
}

FERRY_TEST(fuzz_jpeg_bit_flips_and_garbage) {
  std::mt19937 rng(20240601);
  const auto corpus = jpeg_corpus();
  for (int i = 0; i < 600; ++i) {
    Bytes b = corpus[i % corpus.size()];
    const int flips = 1 + static_cast<int>(rng() % 6);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % b.size();
      if (i % 3 == 0) {
        b[at] = static_cast<uint8_t>(rng());
      } else {
        b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
      }
    }
    (void)decode_jpeg(b);
  }
  for (int i = 0; i < 200; ++i) {
    Bytes b = {0xFF, 0xD8, 0xFF};
    const size_t n = rng() % 400;
    for (size_t k = 0; k < n; ++k) b.push_back(static_cast<uint8_t>(rng()));
    EXPECT(decode_jpeg(b), ": random bytes after SOI decoded as an image");
  }
}

FERRY_TEST(fuzz_jpeg_random_sizes_and_bombs) {
  std::mt19937 rng(7);
  const Bytes base = jpeg_corpus()[0];
  const size_t sof = find_marker(base, 0xC0);
  REQUIRE(sof < base.size());
  const int sides[] = {0, 1, 2, 17, 640, 13000, 65500, 65535};
  for (int h : sides) {
    for (int w : sides) {
      Bytes b = base;
      b[sof + 5] = static_cast<uint8_t>(h >> 8);
      b[sof + 6] = static_cast<uint8_t>(h);
      b[sof + 7] = static_cast<uint8_t>(w >> 8);
      b[sof + 8] = static_cast<uint8_t>(w);
      const int64_t pixels = int64_t{w} * h;
      if (pixels > ferry::kMaxImagePixels) {
        bool bomb = false;
        try {
          (void)ferry::jpeg_decode(b.data(), b.size(), {});
        } catch (const ImageError& e) {
          bomb = e.kind() == ImageErrorKind::kTooLarge;
        }
        EXPECT(bomb, ": ", w, "x", h, " refused as a decompression bomb");
      } else if (pixels <= (1 << 22)) {
        (void)decode_jpeg(b);  // the data does not match the size: any outcome but a crash
      }
    }
  }
}

FERRY_TEST(fuzz_png_truncations_are_errors) {
  for (const Bytes& file : png_corpus()) {
    REQUIRE(!decode_png(file), ": the untruncated file decodes");
    const size_t step = std::max<size_t>(1, file.size() / 150);
    for (size_t n = 0; n < file.size(); n += step) {
      const Bytes cut(file.begin(), file.begin() + n);
      const bool failed = decode_png(cut);
      if (n + 16 < file.size()) EXPECT(failed, ": truncated to ", n, " of ", file.size(), " bytes");
    }
  }
}

FERRY_TEST(fuzz_png_bit_flips_with_valid_crcs) {
  std::mt19937 rng(42);
  const auto corpus = png_corpus();
  for (int i = 0; i < 600; ++i) {
    Bytes b = corpus[i % corpus.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = 8 + rng() % (b.size() - 8);
      b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    if (i % 4 != 0) fix_png_crcs(b);  // mostly past the CRCs, into zlib and the filters
    (void)decode_png(b);
  }
}

FERRY_TEST(fuzz_png_bombs_are_refused_before_allocation) {
  const Bytes base = png_corpus()[0];
  const uint32_t sides[][2] = {{100000, 100000}, {0x7FFFFFFF, 2}, {20000, 9000}};
  for (const auto& s : sides) {
    Bytes b = base;
    for (int i = 0; i < 4; ++i) {
      b[16 + i] = static_cast<uint8_t>(s[0] >> (24 - 8 * i));
      b[20 + i] = static_cast<uint8_t>(s[1] >> (24 - 8 * i));
    }
    fix_png_crcs(b);
    for (int way = 0; way < 2; ++way) {
      bool bomb = false;
      try {
        if (way == 0) {
          (void)ferry::png_read_info(b.data(), b.size());
        } else {
          (void)ferry::png_decode(b.data(), b.size());
        }
      } catch (const ImageError& e) {
        bomb = e.kind() == ImageErrorKind::kTooLarge;
      }
      EXPECT(bomb, ": ", s[0], "x", s[1], " refused as a decompression bomb");
    }
  }
}

FERRY_TEST(fuzz_sniffing_and_sizes_of_random_files) {
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    Bytes b(rng() % 64);
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    if (i % 3 == 0 && b.size() >= 3) b[0] = 0xFF, b[1] = 0xD8, b[2] = 0xFF;
    try {
      (void)ferry::read_image_size(b.data(), b.size());
      EXPECT(false, ": random bytes read as an image header");
    } catch (const ImageError&) {
    }
  }
}

#endif
