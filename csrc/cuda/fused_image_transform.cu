// dtype conversion, scaling, per-channel normalisation and an NCHW <-> NHWC layout change
// in one pass over the batch: one read of the input and one write of the output, where the
// torch-op path makes a round trip through memory per step.
#include "fused_image_transform.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ferry::cuda {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill every SM of a large GPU several times; the grid-stride loop takes
// the rest, so the grid never nears its size limit.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

struct ChannelParams {
  float mean[kMaxNormChannels];
  float std[kMaxNormChannels];
};

__device__ __forceinline__ float load(const uint8_t* p) { return static_cast<float>(*p); }
__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// One thread per pixel, looping over its channels. For the few channels of an image both
// sides stay coalesced without a shared-memory tile: on an NCHW side a warp touches 32
// consecutive pixels of one plane, on an NHWC side one contiguous run of pixels x channels.
// The explicit _rn intrinsics keep nvcc from contracting the steps into an FMA, so results
// are bit-identical to torch's separate mul, sub and div in float32.
// The channel table is read from the kernel's parameter space as it is (no copy per
// thread, checked in the PTX), so no device buffer has to be allocated and kept alive.
template <typename In, typename Out>
__global__ void __launch_bounds__(kThreads)
    fused_image_transform_kernel(const In* __restrict__ in, Out* __restrict__ out,
                                 int64_t n_pixels, int64_t c, int64_t hw, bool in_nhwc,
                                 bool out_nhwc, float scale, bool normalise,
                                 const ChannelParams params) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       pix < n_pixels; pix += step) {
    const int64_t image = pix / hw;
    const int64_t nchw_base = image * c * hw + (pix - image * hw);
    const int64_t in_base = in_nhwc ? pix * c : nchw_base;
    const int64_t in_stride = in_nhwc ? 1 : hw;
    const int64_t out_base = out_nhwc ? pix * c : nchw_base;
    const int64_t out_stride = out_nhwc ? 1 : hw;
    for (int64_t ch = 0; ch < c; ++ch) {
      float v = __fmul_rn(load(in + in_base + ch * in_stride), scale);
      if (normalise) v = __fdiv_rn(__fsub_rn(v, params.mean[ch]), params.std[ch]);
      store(out + out_base + ch * out_stride, v);
    }
  }
}

template <typename In, typename Out>
cudaError_t launch(const ImageTransformArgs& a, const ChannelParams& params,
                   cudaStream_t stream) {
  const int64_t n_pixels = a.n * a.hw;
  const int64_t blocks = std::min((n_pixels + kThreads - 1) / kThreads, kMaxBlocks);
  fused_image_transform_kernel<In, Out><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const In*>(a.input), static_cast<Out*>(a.output), n_pixels, a.c, a.hw,
      a.input_nhwc, a.output_nhwc, a.scale, a.num_norm_channels > 0, params);
  return cudaGetLastError();
}

template <typename In>
cudaError_t launch_for_output(const ImageTransformArgs& a, const ChannelParams& params,
                              cudaStream_t stream) {
  switch (a.output_type) {
    case ElemType::kFloat32:
      return launch<In, float>(a, params, stream);
    case ElemType::kFloat16:
      return launch<In, __half>(a, params, stream);
    case ElemType::kBFloat16:
      return launch<In, __nv_bfloat16>(a, params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

int launch_fused_image_transform(const ImageTransformArgs& a, void* stream) {
  if (a.n < 0 || a.c < 0 || a.hw < 0) return cudaErrorInvalidValue;
  if (a.num_norm_channels != 0 &&
      (a.num_norm_channels != a.c || a.num_norm_channels > kMaxNormChannels ||
       a.mean == nullptr || a.std == nullptr)) {
    return cudaErrorInvalidValue;
  }
  // A grid of zero blocks is an invalid launch, and there is nothing to do.
  if (a.n == 0 || a.c == 0 || a.hw == 0) return cudaSuccess;
  if (a.input == nullptr || a.output == nullptr) return cudaErrorInvalidValue;

  ChannelParams params{};
  for (int i = 0; i < a.num_norm_channels; ++i) {
    params.mean[i] = a.mean[i];
    params.std[i] = a.std[i];
  }
  const auto s = static_cast<cudaStream_t>(stream);
  switch (a.input_type) {
    case ElemType::kUInt8:
      return launch_for_output<uint8_t>(a, params, s);
    case ElemType::kFloat32:
      return launch_for_output<float>(a, params, s);
    case ElemType::kFloat16:
      return launch_for_output<__half>(a, params, s);
    case ElemType::kBFloat16:
      return launch_for_output<__nv_bfloat16>(a, params, s);
  }
  return cudaErrorInvalidValue;
}

const char* cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace ferry::cuda
