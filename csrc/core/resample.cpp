#include "resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace ferry {
namespace {

// PIL's fixed point: 8 bits of result, 2 bits of headroom for the filters' negative lobes.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

double bilinear(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double bicubic(double x) {
  constexpr double a = -0.5;  // PIL's (and Keys') choice
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output pixel along one axis: the first source pixel it reads, how many, and
// their weights in fixed point (ksize per output pixel, zero past the count).
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs and normalize_coeffs_8bpc, with the same double arithmetic in
// the same order (this file is built with -ffp-contract=off, so nothing is fused).
Coefficients coefficients(int in_size, float in0, float in1, int out_size,
                          ResampleFilter filter) {
  double (*kernel)(double) = filter == ResampleFilter::kBicubic ? bicubic : bilinear;
  const double kernel_support = filter == ResampleFilter::kBicubic ? 2.0 : 1.0;
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // widened when downscaling
  const double support = kernel_support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = kernel((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    int32_t* out = &c.weights[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? k[x] / ww : k[x];
      out[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                     : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = std::max(xmax, 0);
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  return static_cast<uint8_t>(std::clamp(v >> kPrecisionBits, 0, 255));
}

// Source columns are read from `first_col` on (the vertical-first order narrows the
// intermediate image to the columns the horizontal pass reads).
template <int C>
void horizontal_pass(const Image& in, int first_row, int first_col, const Coefficients& c,
                     Image& out) {
  const int width = out.width();
  for (int y = 0; y < out.height(); ++y) {
    const uint8_t* src = in.row(first_row + y);
    uint8_t* dst = out.row(y);
    for (int xx = 0; xx < width; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* p = src + static_cast<ptrdiff_t>(c.first[xx] - first_col) * C;
      int32_t ss[C];
      for (int ch = 0; ch < C; ++ch) ss[ch] = kHalf;
      for (int x = 0; x < c.count[xx]; ++x) {
        for (int ch = 0; ch < C; ++ch) ss[ch] += p[x * C + ch] * k[x];
      }
      for (int ch = 0; ch < C; ++ch) dst[xx * C + ch] = clip8(ss[ch]);
    }
  }
}

void horizontal(const Image& in, int first_row, int first_col, const Coefficients& c,
                Image& out) {
  if (in.channels() == 3) {
    horizontal_pass<3>(in, first_row, first_col, c, out);
  } else {
    horizontal_pass<1>(in, first_row, first_col, c, out);
  }
}

// Row by row, each output row accumulating its source rows in order: the same sums as
// PIL's per-pixel loop (integers, same order per pixel), in a loop the compiler vectorises.
// Reads source columns from `first_col` on, as many as `out` is wide.
void vertical_pass(const Image& in, int row_offset, int first_col, const Coefficients& c,
                   Image& out) {
  const int n = out.width() * out.channels();
  const ptrdiff_t col = static_cast<ptrdiff_t>(first_col) * in.channels();
  std::vector<int32_t> acc(n);
  for (int yy = 0; yy < out.height(); ++yy) {
    std::fill(acc.begin(), acc.end(), kHalf);
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    const int first = c.first[yy] - row_offset;
    for (int y = 0; y < c.count[yy]; ++y) {
      const uint8_t* src = in.row(first + y) + col;
      const int32_t w = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < n; ++i) a[i] += src[i] * w;
    }
    uint8_t* dst = out.row(yy);
    for (int i = 0; i < n; ++i) dst[i] = clip8(acc[i]);
  }
}

// PIL's ImagingScaleAffine with the affine matrix _imaging.c builds for NEAREST: source
// positions accumulated in doubles from the first pixel's centre, pixels that map outside
// left at 0.
Image nearest(const Image& in, int width, int height, const ResampleBox& box) {
  const double ax = static_cast<double>(box.right - box.left) / width;
  const double ay = static_cast<double>(box.bottom - box.top) / height;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  std::vector<int> xin(width, 0);
  int xmin = width;
  int xmax = 0;
  double xo = box.left + ax * 0.5;
  for (int x = 0; x < width; ++x) {
    const int xi = coord(xo);
    if (xi >= 0 && xi < in.width()) {
      xmax = x + 1;
      xmin = std::min(xmin, x);
      xin[x] = xi;
    }
    xo += ax;
  }
  const int C = in.channels();
  Image out = Image::filled(width, height, C, in.mode(), 0);
  double yo = box.top + ay * 0.5;
  for (int y = 0; y < height; ++y) {
    const int yi = coord(yo);
    if (yi >= 0 && yi < in.height()) {
      const uint8_t* src = in.row(yi);
      uint8_t* dst = out.row(y);
      for (int x = xmin; x < xmax; ++x) std::memcpy(dst + x * C, src + xin[x] * C, C);
    }
    yo += ay;
  }
  return out;
}

Image copy_of(const Image& in, int left, int top, int width, int height) {
  Image out(width, height, in.channels(), in.mode());
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.row(y), in.row(top + y) + static_cast<ptrdiff_t>(left) * in.channels(),
                static_cast<size_t>(width) * in.channels());
  }
  return out;
}

}  // namespace

bool is_supported_filter(int code) {
  return code == static_cast<int>(ResampleFilter::kNearest) ||
         code == static_cast<int>(ResampleFilter::kBilinear) ||
         code == static_cast<int>(ResampleFilter::kBicubic);
}

Image resize_image(const Image& in, int width, int height, ResampleFilter filter,
                   const ResampleBox* box_or_null) {
  if (width < 1 || height < 1) {
    throw ImageError(ImageErrorKind::kBadArgument, "resize to " + std::to_string(width) + "x" +
                                                       std::to_string(height) +
                                                       ": height and width must be > 0");
  }
  const ResampleBox box = box_or_null != nullptr
                              ? *box_or_null
                              : ResampleBox{0.0f, 0.0f, static_cast<float>(in.width()),
                                            static_cast<float>(in.height())};
  FERRY_CHECK(box.left >= 0 && box.top >= 0 && box.right <= in.width() &&
                  box.bottom <= in.height() && box.right >= box.left &&
                  box.bottom >= box.top,
              "resample box outside the image");
  // Image.resize returns a copy when nothing changes; _imaging.c crops when the box is a
  // whole-pixel rectangle of the requested size.
  if (box.left == std::floor(box.left) && box.top == std::floor(box.top) &&
      box.right - box.left == width && box.bottom - box.top == height) {
    return copy_of(in, static_cast<int>(box.left), static_cast<int>(box.top), width, height);
  }
  if (filter == ResampleFilter::kNearest) return nearest(in, width, height, box);

  const bool need_horizontal = width != in.width() || box.left != 0 || box.right != width;
  const bool need_vertical = height != in.height() || box.top != 0 || box.bottom != height;
  if (!need_horizontal && !need_vertical) return copy_of(in, 0, 0, in.width(), in.height());
  const Coefficients vert = coefficients(in.height(), box.top, box.bottom, height, filter);
  if (!need_horizontal) {
    Image out(in.width(), height, in.channels(), in.mode());
    vertical_pass(in, 0, 0, vert, out);
    return out;
  }
  const Coefficients horiz = coefficients(in.width(), box.left, box.right, width, filter);
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice what
  // the width does (Pillow#9549); the 8-bit rounding between the passes makes the order
  // visible in the pixels. Earlier Pillows always ran the horizontal pass first.
  const bool vertical_first =
      in.height() > height && in.height() - height > 2 * (in.width() - width);
  if (vertical_first) {
    const int first_col = horiz.first[0];
    const int last_col = horiz.first[width - 1] + horiz.count[width - 1];
    Image temp(last_col - first_col, height, in.channels(), in.mode());
    vertical_pass(in, 0, first_col, vert, temp);
    Image out(width, height, in.channels(), in.mode());
    horizontal(temp, 0, first_col, horiz, out);
    return out;
  }
  // Horizontal first, over the rows the vertical pass reads.
  const int first_row = vert.first[0];
  const int last_row = vert.first[height - 1] + vert.count[height - 1];
  Image temp(width, last_row - first_row, in.channels(), in.mode());
  horizontal(in, first_row, 0, horiz, temp);
  if (!need_vertical) return temp;
  Image out(width, height, in.channels(), in.mode());
  vertical_pass(temp, first_row, 0, vert, out);
  return out;
}

}  // namespace ferry
