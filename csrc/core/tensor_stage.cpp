// Built with -ffp-contract=off (setup.py, CMakeLists.txt): a fused multiply-add would round
// differently from torch's separate operations.
#include "tensor_stage.h"

#include <cstring>
#include <string>

namespace ferry {
namespace {

template <typename T, typename Map>
void write_chw(const Image& image, int channels, T* dst, Map map) {
  const int w = image.width();
  const int h = image.height();
  const int stored = image.channels();
  for (int c = 0; c < channels; ++c) {
    const int src_c = stored == 1 ? 0 : c;
    T* plane = dst + static_cast<size_t>(c) * w * h;
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = image.row(y) + src_c;
      T* out = plane + static_cast<size_t>(y) * w;
      for (int x = 0; x < w; ++x) out[x] = map(c, src[x * stored]);
    }
  }
}

}  // namespace

std::vector<int64_t> tensor_shape(const TensorStage& stage, int width, int height,
                                  int channels) {
  if (stage.layout == TensorLayout::kUint8Hwc) return {height, width, channels};
  return {channels, height, width};
}

size_t tensor_element_size(const TensorStage& stage) {
  return stage.layout == TensorLayout::kFloat32Chw ? sizeof(float) : 1;
}

void check_tensor_stage(const TensorStage& stage, int channels) {
  if (stage.mean.size() != stage.std.size()) {
    throw ImageError(ImageErrorKind::kBadArgument, "Normalize: mean and std differ in length");
  }
  if (stage.mean.empty()) return;
  if (stage.layout != TensorLayout::kFloat32Chw) {
    throw ImageError(ImageErrorKind::kBadArgument, "Normalize applies to float tensors only");
  }
  if (stage.mean.size() != 1 && stage.mean.size() != static_cast<size_t>(channels)) {
    throw ImageError(ImageErrorKind::kBadArgument,
                     "Normalize: " + std::to_string(stage.mean.size()) +
                         " means for an image of " + std::to_string(channels) + " channels");
  }
}

void write_tensor(const Image& image, const TensorStage& stage, void* dst) {
  const int channels = image.mode_channels();
  check_tensor_stage(stage, channels);
  switch (stage.layout) {
    case TensorLayout::kUint8Hwc: {
      auto* out = static_cast<uint8_t*>(dst);
      const size_t row = static_cast<size_t>(image.width()) * channels;
      for (int y = 0; y < image.height(); ++y, out += row) {
        const uint8_t* src = image.row(y);
        if (image.channels() == channels) {
          std::memcpy(out, src, row);
        } else {
          for (int x = 0; x < image.width(); ++x) {
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = src[x];
          }
        }
      }
      return;
    }
    case TensorLayout::kUint8Chw:
      write_chw(image, channels, static_cast<uint8_t*>(dst), [](int, uint8_t v) { return v; });
      return;
    case TensorLayout::kFloat32Chw: {
      // 256 values per channel, each computed once as torch computes it.
      std::vector<float> table(static_cast<size_t>(channels) * 256);
      for (int c = 0; c < channels; ++c) {
        for (int v = 0; v < 256; ++v) {
          float x = static_cast<float>(v) / 255.0f;
          if (!stage.mean.empty()) {
            const size_t i = stage.mean.size() == 1 ? 0 : static_cast<size_t>(c);
            x = x - stage.mean[i];
            x = x / stage.std[i];
          }
          table[static_cast<size_t>(c) * 256 + v] = x;
        }
      }
      const float* t = table.data();
      write_chw(image, channels, static_cast<float*>(dst),
                [t](int c, uint8_t v) { return t[c * 256 + v]; });
      return;
    }
  }
}

}  // namespace ferry
