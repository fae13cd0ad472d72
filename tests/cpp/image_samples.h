// Test images made in the test (nothing binary is committed): synthetic pixels with
// gradients, edges and noise, encoded through the system libjpeg and libpng.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace image_samples {

// Interleaved 8-bit samples.
struct Pixels {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> data;
  uint8_t at(int x, int y, int c) const { return data[(size_t(y) * width + x) * channels + c]; }
};

Pixels synthetic(int width, int height, int channels, uint32_t seed);

struct JpegSpec {
  int quality = 90;
  int h_samp = 2;  // the luma's sampling factors (chroma 1x1): 2x2 is 4:2:0, 1x1 is 4:4:4
  int v_samp = 2;
  bool progressive = false;
  int restart_rows = 0;
  bool ycck = false;  // 4 channels: stored as YCCK (Adobe transform 2) instead of CMYK
};

#if defined(FERRY_WITH_JPEG)
// channels 1 (gray), 3 (RGB -> YCbCr) or 4 (CMYK, written with an Adobe marker).
std::vector<uint8_t> encode_jpeg(const Pixels& pixels, const JpegSpec& spec);
#endif

#if defined(FERRY_WITH_PNG)
// A PNG of `rows` in PNG's own packing (bits packed MSB first below 8, 16-bit samples big
// endian), any colour type and depth; `palette` RGB triples, `trns` the tRNS bytes.
std::vector<uint8_t> encode_png(int width, int height, int color_type, int bit_depth,
                                bool interlaced, const std::vector<std::vector<uint8_t>>& rows,
                                const std::vector<uint8_t>& palette = {},
                                const std::vector<uint8_t>& trns = {});
#endif

// A private scratch directory for files (removed by the destructor).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace image_samples
