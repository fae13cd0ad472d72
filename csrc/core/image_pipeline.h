// One image sample's way from file to tensor: read, decode (only the region the first
// crop needs), PIL's ops in order, then the tensor stage written into the sample's row of
// a batch. Batches run on a thread pool. Thread-safe: the functions share no state.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "image.h"
#include "resample.h"
#include "tensor_stage.h"

namespace ferry {

// One op of a sample, with PIL's semantics (see /tmp/vision-interface.md, ferry.vision).
struct ImageOp {
  enum class Kind { kCrop, kPad, kResize, kHFlip, kVFlip, kGray };
  Kind kind = Kind::kCrop;
  // kCrop: left, top, width, height (outside the image is 0). kPad: the border widths
  // (left, top, right, bottom). kResize: width, height.
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
  int right = 0;
  int bottom = 0;
  ResampleFilter filter = ResampleFilter::kBilinear;  // kResize
  std::array<uint8_t, 3> fill{};                      // kPad, per channel
  int channels = 1;                                   // kGray: 1, or 3 (L replicated)
};

struct ImagePlan {
  std::vector<ImageOp> ops;
  TensorStage stage;
};

struct DecodeOptions {
  // Declared inexact: JPEGs scaled down in the DCT domain (by M/8, the smallest that keeps
  // the first resize's source at least its size), fast IDCT, plain chroma upsampling.
  bool fast = false;
};

// PIL's ops on an image, in order, from ops[first].
Image apply_ops(Image image, const std::vector<ImageOp>& ops, size_t first = 0);

// Decodes an encoded image and applies the plan's ops (not its tensor stage).
Image transform_encoded(const uint8_t* data, size_t size, const std::vector<ImageOp>& ops,
                        const DecodeOptions& options);

// The same from a file. Errors are ImageErrors that name the file and, when
// sample_index >= 0, the sample.
Image load_transformed(const std::string& path, const std::vector<ImageOp>& ops,
                       const DecodeOptions& options, int64_t sample_index);

// A sample's image after its ops, and the shape of its tensor (the tensor stage is
// checked against the image: errors name the file and sample).
struct LoadedSample {
  Image image;
  std::vector<int64_t> shape;
};
LoadedSample load_sample(const std::string& path, const ImagePlan& plan,
                         const DecodeOptions& options, int64_t sample_index);

// The file's (width, height) from its header; errors name the file.
std::array<int, 2> image_file_size(const std::string& path);

// Where a batch goes: `count` rows of `row_bytes`, each a tensor of `row_shape` with
// elements of `element_size` bytes.
struct BatchDestination {
  uint8_t* data = nullptr;
  size_t row_bytes = 0;
  std::vector<int64_t> row_shape;
  size_t element_size = 1;
};

// Sample k (paths[k] with plans[k]) into row k, on up to `num_threads` threads (the
// calling thread is one of them). The error raised is that of the lowest failing sample,
// named with its index first_index + k; samples after a failure may be skipped.
void load_image_batch(const std::vector<std::string>& paths, const std::vector<ImagePlan>& plans,
                      const BatchDestination& destination, int num_threads,
                      int64_t first_index, const DecodeOptions& options);

}  // namespace ferry
