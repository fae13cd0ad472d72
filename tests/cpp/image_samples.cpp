#include "image_samples.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#if defined(FERRY_WITH_JPEG)
#include <jpeglib.h>
#endif
#if defined(FERRY_WITH_PNG)
#include <png.h>
#endif

namespace image_samples {

Pixels synthetic(int width, int height, int channels, uint32_t seed) {
  Pixels p{width, height, channels, std::vector<uint8_t>(size_t(width) * height * channels)};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-12, 12);
  const double fx = 0.05 + (seed % 7) * 0.01;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        double v = 128 + 90 * std::sin(fx * (x + 3 * c) + 0.07 * y * (c + 1));
        if (((x / 13) + (y / 11) + c) % 5 == 0) v = 255 - v;  // hard edges: chroma matters
        const int n = static_cast<int>(v) + noise(rng);
        p.data[(size_t(y) * width + x) * channels + c] =
            static_cast<uint8_t>(n < 0 ? 0 : n > 255 ? 255 : n);
      }
    }
  }
  return p;
}

#if defined(FERRY_WITH_JPEG)
std::vector<uint8_t> encode_jpeg(const Pixels& pixels, const JpegSpec& spec) {
  jpeg_compress_struct ci;
  jpeg_error_mgr err;
  ci.err = jpeg_std_error(&err);  // exits on error: a test image that cannot be made
  jpeg_create_compress(&ci);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&ci, &out, &size);
  ci.image_width = pixels.width;
  ci.image_height = pixels.height;
  ci.input_components = pixels.channels;
  ci.in_color_space =
      pixels.channels == 1 ? JCS_GRAYSCALE : pixels.channels == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&ci);
  if (pixels.channels == 4) jpeg_set_colorspace(&ci, spec.ycck ? JCS_YCCK : JCS_CMYK);
  jpeg_set_quality(&ci, spec.quality, TRUE);
  if (pixels.channels > 1) {
    ci.comp_info[0].h_samp_factor = spec.h_samp;
    ci.comp_info[0].v_samp_factor = spec.v_samp;
    for (int c = 1; c < ci.num_components; ++c) {
      ci.comp_info[c].h_samp_factor = 1;
      ci.comp_info[c].v_samp_factor = 1;
    }
    if (pixels.channels == 4 && !spec.ycck) {  // K at full resolution too, like C
      ci.comp_info[3].h_samp_factor = spec.h_samp;
      ci.comp_info[3].v_samp_factor = spec.v_samp;
    }
  }
  if (spec.progressive) jpeg_simple_progression(&ci);
  ci.restart_in_rows = spec.restart_rows;
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    const size_t offset = size_t(ci.next_scanline) * pixels.width * pixels.channels;
    JSAMPROW row = const_cast<uint8_t*>(&pixels.data[offset]);
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  std::vector<uint8_t> bytes(out, out + size);
  std::free(out);
  return bytes;
}
#endif

#if defined(FERRY_WITH_PNG)
namespace {
void append(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
void flush(png_structp) {}
}  // namespace

std::vector<uint8_t> encode_png(int width, int height, int color_type, int bit_depth,
                                bool interlaced, const std::vector<std::vector<uint8_t>>& rows,
                                const std::vector<uint8_t>& palette,
                                const std::vector<uint8_t>& trns) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) throw std::runtime_error("encode_png failed");
  png_set_write_fn(png, &out, append, flush);
  png_set_check_for_invalid_index(png, 0);  // tests write indices past the palette on purpose
  png_set_IHDR(png, info, width, height, bit_depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> colors;
  for (size_t i = 0; i + 2 < palette.size(); i += 3) {
    colors.push_back({palette[i], palette[i + 1], palette[i + 2]});
  }
  if (!colors.empty()) png_set_PLTE(png, info, colors.data(), static_cast<int>(colors.size()));
  png_color_16 trans_color{};
  if (!trns.empty()) {
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
      png_set_tRNS(png, info, trns.data(), static_cast<int>(trns.size()), nullptr);
    } else {
      trans_color.gray = trans_color.red = trns[0];
      trans_color.green = trns.size() > 1 ? trns[1] : 0;
      trans_color.blue = trns.size() > 2 ? trns[2] : 0;
      png_set_tRNS(png, info, nullptr, 0, &trans_color);
    }
  }
  png_write_info(png, info);
  std::vector<png_bytep> pointers;
  for (const auto& r : rows) pointers.push_back(const_cast<png_bytep>(r.data()));
  png_write_image(png, pointers.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}
#endif

TempDir::TempDir() {
  char pattern[] = "/tmp/ferry_image_test_XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::vector<uint8_t>& bytes) const {
  const std::string file = path_ + "/" + name;
  std::ofstream f(file, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + file);
  return file;
}

}  // namespace image_samples
