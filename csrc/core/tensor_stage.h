// The last step of a sample: its Image written as the sample's tensor, straight into the
// destination buffer (a row of the batch). Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "image.h"

namespace ferry {

enum class TensorLayout {
  kUint8Chw,   // PILToTensor: uint8, C x H x W
  kUint8Hwc,   // the image as an array: uint8, H x W x C
  kFloat32Chw  // ToTensor (value / 255), optionally then Normalize(mean, std)
};

struct TensorStage {
  TensorLayout layout = TensorLayout::kFloat32Chw;
  // Normalize's mean and std (kFloat32Chw only): empty, or one value per channel (one
  // value broadcasts over all channels, as in torch).
  std::vector<float> mean;
  std::vector<float> std;
};

// The shape of the tensor an image of `width` x `height` and `channels` (its mode's) gives.
std::vector<int64_t> tensor_shape(const TensorStage& stage, int width, int height,
                                  int channels);
size_t tensor_element_size(const TensorStage& stage);

// Throws kBadArgument when mean/std cannot apply to an image of `channels`.
void check_tensor_stage(const TensorStage& stage, int channels);

// Writes the image (its mode's channels: a grayscale-stored RGB image is replicated) to
// `dst` as the stage says. Floats are computed as torch computes
// x.float().div(255).sub(mean).div(std): each operation rounded to float32, none fused.
void write_tensor(const Image& image, const TensorStage& stage, void* dst);

}  // namespace ferry
