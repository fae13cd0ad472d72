#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../cuda/fused_image_transform.h"
#include "register.h"

#ifdef FERRY_WITH_CUDA_KERNELS
#include <ATen/MemoryOverlap.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <optional>
#endif

namespace py = pybind11;

namespace ferry {
namespace {

constexpr const char* kDoc =
    "fused_image_transform(input, output, scale, mean, std): one CUDA kernel writing\n"
    "output = ((float(input) * scale - mean[c]) / std[c]) cast to output's dtype, on the\n"
    "current stream of input's device. input and output: CUDA tensors of the same logical\n"
    "shape (N, C, H, W), each contiguous or channels_last-contiguous (its memory format\n"
    "is the layout read or written). input uint8/float32/float16/bfloat16, output\n"
    "float32/float16/bfloat16. mean and std: both empty (no normalisation) or C values.";

#ifdef FERRY_WITH_CUDA_KERNELS

std::optional<cuda::ElemType> elem_type(at::ScalarType t) {
  switch (t) {
    case at::kByte:
      return cuda::ElemType::kUInt8;
    case at::kFloat:
      return cuda::ElemType::kFloat32;
    case at::kHalf:
      return cuda::ElemType::kFloat16;
    case at::kBFloat16:
      return cuda::ElemType::kBFloat16;
    default:
      return std::nullopt;
  }
}

// True for NHWC in memory. A tensor that is both (C == 1 or H * W == 1) has the same byte
// order either way, so reading it as NCHW is right.
bool is_nhwc(const at::Tensor& t, const char* name) {
  if (t.is_contiguous()) return false;
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return true;
  throw py::value_error(std::string(name) +
                        " must be contiguous or channels_last-contiguous (call .contiguous() "
                        "first)");
}

void fused_image_transform(const at::Tensor& input, const at::Tensor& output, double scale,
                           const std::vector<float>& mean, const std::vector<float>& std) {
  if (!input.is_cuda() || !output.is_cuda() || input.device() != output.device()) {
    throw py::value_error("input and output must be on the same CUDA device, got " +
                          input.device().str() + " and " + output.device().str());
  }
  if (input.dim() != 4 || input.sizes() != output.sizes()) {
    throw py::value_error("input and output must both have shape (N, C, H, W), got " +
                          c10::str(input.sizes()) + " and " + c10::str(output.sizes()));
  }
  const auto in_type = elem_type(input.scalar_type());
  const auto out_type = elem_type(output.scalar_type());
  if (!in_type) {
    throw py::type_error(std::string("input dtype must be uint8, float32, float16 or "
                                     "bfloat16, got ") +
                         c10::toString(input.scalar_type()));
  }
  if (!out_type || *out_type == cuda::ElemType::kUInt8) {
    throw py::type_error(std::string("output dtype must be float32, float16 or bfloat16, "
                                     "got ") +
                         c10::toString(output.scalar_type()));
  }
  const int64_t c = input.size(1);
  if (mean.size() != std.size() || (!mean.empty() && static_cast<int64_t>(mean.size()) != c)) {
    throw py::value_error("mean and std must both be empty or both have C = " +
                          std::to_string(c) + " values, got " + std::to_string(mean.size()) +
                          " and " + std::to_string(std.size()));
  }
  if (mean.size() > static_cast<size_t>(cuda::kMaxNormChannels)) {
    throw py::value_error("the kernel normalises at most " +
                          std::to_string(cuda::kMaxNormChannels) + " channels, got " +
                          std::to_string(c));
  }
  // The kernel reads every input element after some outputs were written.
  if (at::get_overlap_status(input, output) != at::MemOverlapStatus::No) {
    throw py::value_error("output must not share memory with input");
  }

  cuda::ImageTransformArgs args;
  args.input = input.const_data_ptr();
  args.input_type = *in_type;
  args.input_nhwc = is_nhwc(input, "input");
  args.output = output.data_ptr();
  args.output_type = *out_type;
  args.output_nhwc = is_nhwc(output, "output");
  args.n = input.size(0);
  args.c = c;
  args.hw = input.size(2) * input.size(3);
  args.scale = static_cast<float>(scale);
  args.num_norm_channels = static_cast<int>(mean.size());
  args.mean = mean.data();
  args.std = std.data();

  int code = 0;
  {
    py::gil_scoped_release nogil;
    // Device-generic c10 API: this file compiles without the CUDA headers of torch.
    const c10::DeviceGuard device_guard(input.device());
    const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    void* stream = impl.getStream(input.device()).native_handle();
    code = cuda::launch_fused_image_transform(args, stream);
  }
  if (code != 0) {
    throw std::runtime_error(std::string("ferry's fused image transform kernel failed: ") +
                             cuda::cuda_error_string(code) + " (CUDA error " +
                             std::to_string(code) + ")");
  }
}

#endif  // FERRY_WITH_CUDA_KERNELS

}  // namespace

void register_transforms(py::module_& m) {
  m.attr("fused_image_transform_max_channels") = cuda::kMaxNormChannels;
  m.def(
      "fused_image_transform",
      [](const at::Tensor& input, const at::Tensor& output, double scale,
         const std::vector<float>& mean, const std::vector<float>& std) {
#ifdef FERRY_WITH_CUDA_KERNELS
        fused_image_transform(input, output, scale, mean, std);
#else
        throw std::runtime_error(
            "ferry was built without its CUDA kernels (torch without CUDA, no nvcc, or "
            "FERRY_CUDA_KERNELS=0 at build time), so fused_image_transform is not "
            "available; ferry.ImageTransform uses its torch-op path instead. Rebuild with "
            "a CUDA torch and nvcc (FERRY_CUDA_KERNELS=1 to insist).");
#endif
      },
      kDoc, py::arg("input"), py::arg("output"), py::arg("scale"), py::arg("mean"),
      py::arg("std"));
}

}  // namespace ferry
