// The fused image transform's launcher: plain C++ types only, so the bindings include it
// in every build (with or without CUDA) and no torch header reaches the kernel.
#pragma once

#include <cstdint>

namespace ferry::cuda {

enum class ElemType : int { kUInt8 = 0, kFloat32 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Per-channel mean/std travel by value in the kernel's parameters (no device allocation,
// no copy to order against the stream); this bounds the channel count when normalising.
constexpr int kMaxNormChannels = 64;

// One batch of n images, c channels, hw pixels each; each side is either NCHW or NHWC,
// densely packed. out = cast((float(in) * scale - mean[ch]) / std[ch]), in float32
// arithmetic, rounded to nearest at every step (the same steps as the torch-op path).
struct ImageTransformArgs {
  const void* input = nullptr;
  ElemType input_type = ElemType::kUInt8;
  bool input_nhwc = false;
  void* output = nullptr;
  ElemType output_type = ElemType::kFloat32;
  bool output_nhwc = false;
  int64_t n = 0;
  int64_t c = 0;
  int64_t hw = 0;
  float scale = 1.0f;
  int num_norm_channels = 0;  // 0 (no normalisation) or c
  const float* mean = nullptr;
  const float* std = nullptr;
};

// Enqueues the kernel on `stream` (a cudaStream_t) of the current device. Returns 0
// (cudaSuccess) or the cudaError_t of the failure, including bad arguments
// (cudaErrorInvalidValue); nothing is launched then.
int launch_fused_image_transform(const ImageTransformArgs& args, void* stream);

// The CUDA runtime's message for a code returned above.
const char* cuda_error_string(int code);

}  // namespace ferry::cuda
