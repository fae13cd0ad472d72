#include "image_pipeline.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <optional>

#include "image_file.h"
#include "image_ops.h"
#include "jpeg_decoder.h"
#include "png_decoder.h"
#include "thread_pool.h"

namespace ferry {
namespace {

struct Rect {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

Rect intersect(const Rect& a, int width, int height) {
  const int x0 = std::max(a.left, 0);
  const int y0 = std::max(a.top, 0);
  const int x1 = std::min(a.left + a.width, width);
  const int y1 = std::min(a.top + a.height, height);
  if (x0 >= x1 || y0 >= y1) return {};
  return {x0, y0, x1 - x0, y1 - y0};
}

bool is_crop(const std::vector<ImageOp>& ops, size_t i) {
  return i < ops.size() && ops[i].kind == ImageOp::Kind::kCrop;
}

// The fast mode's JPEG decode when ops start with [crop inside the image,] resize: scaled
// in the DCT domain by the smallest M/8 that keeps the source rectangle at least the
// resize's size, then resampled from the exact (fractional) scaled rectangle. Nothing when
// ops do not start so, or when no M < 8 keeps the size.
std::optional<Image> decode_jpeg_scaled(const uint8_t* data, size_t size,
                                        const std::vector<ImageOp>& ops, const JpegInfo& info,
                                        size_t* consumed) {
  const bool crop = is_crop(ops, 0);
  const size_t r = crop ? 1 : 0;
  if (r >= ops.size() || ops[r].kind != ImageOp::Kind::kResize) return std::nullopt;
  Rect box{0, 0, info.width, info.height};
  if (crop) {
    box = {ops[0].left, ops[0].top, ops[0].width, ops[0].height};
    const Rect inside = intersect(box, info.width, info.height);
    if (inside.width != box.width || inside.height != box.height) return std::nullopt;
  }
  const ImageOp& resize = ops[r];
  int eighths = 1;
  while (eighths < 8 && (int64_t{box.width} * eighths < int64_t{resize.width} * 8 ||
                         int64_t{box.height} * eighths < int64_t{resize.height} * 8)) {
    ++eighths;
  }
  if (eighths == 8) return std::nullopt;
  const float d = 8.0f / static_cast<float>(eighths);
  const float fl = box.left / d;
  const float ft = box.top / d;
  const float fr = (box.left + box.width) / d;
  const float fb = (box.top + box.height) / d;
  JpegOptions options;
  options.fast = true;
  options.scale_eighths = eighths;
  const int x0 = static_cast<int>(std::floor(fl));
  const int y0 = static_cast<int>(std::floor(ft));
  const int x1 = std::min(static_cast<int>(std::ceil(fr)), jpeg_scaled_length(info.width, eighths));
  const int y1 =
      std::min(static_cast<int>(std::ceil(fb)), jpeg_scaled_length(info.height, eighths));
  options.region = {x0, y0, x1 - x0, y1 - y0};
  const Image scaled = jpeg_decode(data, size, options);
  const ResampleBox rbox{fl - x0, ft - y0, std::min(fr - x0, static_cast<float>(x1 - x0)),
                         std::min(fb - y0, static_cast<float>(y1 - y0))};
  *consumed = r + 1;
  return resize_image(scaled, resize.width, resize.height, resize.filter, &rbox);
}

// Decodes what the ops need: only the first crop's rectangle where the codec can (the
// crop is then done: *consumed = 1).
Image decode_for(const uint8_t* data, size_t size, const std::vector<ImageOp>& ops,
                 const DecodeOptions& options, size_t* consumed) {
  *consumed = 0;
  switch (sniff_format(data, size)) {
    case ImageFormat::kPng:
      return png_decode(data, size);
    case ImageFormat::kUnknown:
      throw ImageError(ImageErrorKind::kUnsupported,
                       "not a JPEG or PNG file (ferry decodes those; other formats go to PIL)");
    case ImageFormat::kJpeg:
      break;
  }
  const JpegInfo info = jpeg_read_info(data, size);
  if (options.fast) {
    auto scaled = decode_jpeg_scaled(data, size, ops, info, consumed);
    if (scaled) return *std::move(scaled);
  }
  JpegOptions jpeg;
  jpeg.fast = options.fast;
  if (is_crop(ops, 0)) {
    const ImageOp& c = ops[0];
    const Rect inside = intersect({c.left, c.top, c.width, c.height}, info.width, info.height);
    if (inside.width > 0 && c.width > 0 && c.height > 0) {
      jpeg.region = {inside.left, inside.top, inside.width, inside.height};
      *consumed = 1;
      return crop_image(jpeg_decode(data, size, jpeg), c.left - inside.left,
                        c.top - inside.top, c.width, c.height);
    }
  }
  return jpeg_decode(data, size, jpeg);
}

Image apply_op(Image image, const ImageOp& op) {
  switch (op.kind) {
    case ImageOp::Kind::kCrop:
      return crop_image(std::move(image), op.left, op.top, op.width, op.height);
    case ImageOp::Kind::kPad:
      return pad_image(image, op.left, op.top, op.right, op.bottom, op.fill);
    case ImageOp::Kind::kResize:
      // Image.resize to the same size is a copy: the pixels stay.
      if (op.width == image.width() && op.height == image.height()) return image;
      return resize_image(image, op.width, op.height, op.filter);
    case ImageOp::Kind::kHFlip:
      flip_horizontal(image);
      return image;
    case ImageOp::Kind::kVFlip:
      flip_vertical(image);
      return image;
    case ImageOp::Kind::kGray:
      return to_grayscale(std::move(image), op.channels);
  }
  FERRY_FAIL("unknown image op");
}

std::string where(const std::string& path, int64_t sample_index) {
  std::string out = "cannot load image '" + path + "'";
  if (sample_index >= 0) out += " (sample " + std::to_string(sample_index) + ")";
  return out + ": ";
}

// Rethrows the exception being handled as an ImageError that names the file and sample.
[[noreturn]] void rethrow_named(const std::string& path, int64_t sample_index) {
  try {
    throw;
  } catch (const ImageError& e) {
    throw ImageError(e.kind(), where(path, sample_index) + e.what(), e.sys_errno());
  } catch (const std::bad_alloc&) {
    throw ImageError(ImageErrorKind::kInternal, where(path, sample_index) + "out of memory");
  } catch (const std::exception& e) {
    throw ImageError(ImageErrorKind::kInternal, where(path, sample_index) + e.what());
  }
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace

Image apply_ops(Image image, const std::vector<ImageOp>& ops, size_t first) {
  for (size_t i = first; i < ops.size(); ++i) image = apply_op(std::move(image), ops[i]);
  return image;
}

Image transform_encoded(const uint8_t* data, size_t size, const std::vector<ImageOp>& ops,
                        const DecodeOptions& options) {
  size_t consumed = 0;
  Image image = decode_for(data, size, ops, options, &consumed);
  return apply_ops(std::move(image), ops, consumed);
}

Image load_transformed(const std::string& path, const std::vector<ImageOp>& ops,
                       const DecodeOptions& options, int64_t sample_index) {
  try {
    const FileBytes file = read_file(path);
    return transform_encoded(file.data.get(), file.size, ops, options);
  } catch (...) {
    rethrow_named(path, sample_index);
  }
}

LoadedSample load_sample(const std::string& path, const ImagePlan& plan,
                         const DecodeOptions& options, int64_t sample_index) {
  LoadedSample out{load_transformed(path, plan.ops, options, sample_index), {}};
  try {
    check_tensor_stage(plan.stage, out.image.mode_channels());
    out.shape = tensor_shape(plan.stage, out.image.width(), out.image.height(),
                             out.image.mode_channels());
  } catch (...) {
    rethrow_named(path, sample_index);
  }
  return out;
}

std::array<int, 2> image_file_size(const std::string& path) {
  try {
    const FileBytes file = read_file(path);
    const ImageSize size = read_image_size(file.data.get(), file.size);
    return {size.width, size.height};
  } catch (...) {
    rethrow_named(path, -1);
  }
}

void load_image_batch(const std::vector<std::string>& paths, const std::vector<ImagePlan>& plans,
                      const BatchDestination& destination, int num_threads,
                      int64_t first_index, const DecodeOptions& options) {
  FERRY_CHECK(paths.size() == plans.size(), paths.size(), " paths but ", plans.size(),
              " op lists");
  const int64_t count = static_cast<int64_t>(paths.size());
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex failure_mutex;
  int64_t failed = std::numeric_limits<int64_t>::max();
  std::exception_ptr failure;

  auto run_sample = [&](int64_t k) {
    const ImagePlan& plan = plans[k];
    const int64_t index = first_index + k;
    const LoadedSample sample = load_sample(paths[k], plan, options, index);
    const std::vector<int64_t>& shape = sample.shape;
    try {
      if (shape != destination.row_shape ||
          tensor_element_size(plan.stage) != destination.element_size) {
        throw ImageError(ImageErrorKind::kBadArgument,
                         "the sample's tensor is " + shape_str(shape) + " of " +
                             std::to_string(tensor_element_size(plan.stage)) +
                             "-byte elements, but the batch's rows are " +
                             shape_str(destination.row_shape) + " of " +
                             std::to_string(destination.element_size) + "-byte elements");
      }
      write_tensor(sample.image, plan.stage, destination.data + k * destination.row_bytes);
    } catch (...) {
      rethrow_named(paths[k], index);
    }
  };
  auto work = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const int64_t k = next.fetch_add(1);
      if (k >= count) return;
      try {
        run_sample(k);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (k < failed) {
          failed = k;
          failure = std::current_exception();
        }
        stop.store(true, std::memory_order_relaxed);
      }
    }
  };

  const int threads =
      static_cast<int>(std::clamp<int64_t>(num_threads, 1, std::max<int64_t>(count, 1)));
  if (threads > 1) {
    // Samples are handed out in order, so every sample before a failing one has been
    // started: the lowest failure is the first one in sample order.
    ThreadPool pool(static_cast<size_t>(threads - 1), static_cast<size_t>(threads));
    for (int t = 1; t < threads; ++t) pool.submit(work);
    work();
    pool.shutdown();  // joins the helpers once they found no sample left
  } else {
    work();
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace ferry
