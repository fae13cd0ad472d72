// ferry.vision's native sample pipeline on ferry._C: image_info, load_image, load_images,
// transform_image, image_codecs. The op lists are parsed with the GIL held; decoding and
// everything after it runs with the GIL released.
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "../core/image_ops.h"
#include "../core/image_pipeline.h"
#include "../core/jpeg_decoder.h"
#include "../core/png_decoder.h"
#include "register.h"

namespace py = pybind11;

namespace ferry {
namespace {

// Python's exception types for ImageError (created once, at module import).
PyObject* decode_error_type = nullptr;       // ferry._C.ImageDecodeError(RuntimeError)
PyObject* unsupported_error_type = nullptr;  // ferry._C.UnsupportedImageFormat(ImageDecodeError)

// The message as a str: a path in it that is not UTF-8 comes back as os.fsdecode gives it.
py::object message_of(const ImageError& e) {
  const std::string what = e.what();
  PyObject* text = PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()),
                                        "surrogateescape");
  if (text == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(text);
}

void raise_image_error(const ImageError& e) {
  const py::object message = message_of(e);
  PyObject* type = PyExc_RuntimeError;
  switch (e.kind()) {
    case ImageErrorKind::kIo: {
      // OSError(errno, message) becomes FileNotFoundError, PermissionError... as open() raises.
      py::object exc = py::reinterpret_steal<py::object>(
          PyObject_CallFunction(PyExc_OSError, "iO", e.sys_errno(), message.ptr()));
      if (exc) PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
      return;
    }
    case ImageErrorKind::kUnsupported:
      type = unsupported_error_type;
      break;
    case ImageErrorKind::kCorrupt:
    case ImageErrorKind::kTooLarge:
      type = decode_error_type;
      break;
    case ImageErrorKind::kBadArgument:
      type = PyExc_ValueError;
      break;
    case ImageErrorKind::kInternal:
      break;
  }
  PyErr_SetObject(type, message.ptr());
}

// A path as the OS takes it: str (encoded as os.fsencode does), bytes, or os.PathLike.
std::string fs_path(py::handle obj) {
  py::object path = py::module_::import("os").attr("fspath")(obj);
  if (PyUnicode_Check(path.ptr())) {
    path = py::reinterpret_steal<py::object>(PyUnicode_EncodeFSDefault(path.ptr()));
    if (!path) throw py::error_already_set();
  }
  std::string out = path.cast<std::string>();
  if (out.find('\0') != std::string::npos) throw py::value_error("embedded null byte in path");
  return out;
}

[[noreturn]] void bad_op(size_t position, py::handle op, const std::string& why) {
  throw py::value_error("image op " + std::to_string(position) + " " +
                        py::repr(op).cast<std::string>() + ": " + why);
}

int as_int(py::handle value, size_t position, py::handle op) {
  if (!PyIndex_Check(value.ptr()) || PyBool_Check(value.ptr())) {
    bad_op(position, op, "expected ints");
  }
  const long long v = py::int_(py::reinterpret_borrow<py::object>(value)).cast<long long>();
  if (v < -(1LL << 30) || v > (1LL << 30)) bad_op(position, op, "value out of range");
  return static_cast<int>(v);
}

std::vector<float> as_floats(py::handle value, size_t position, py::handle op) {
  std::vector<float> out;
  for (py::handle v : py::reinterpret_borrow<py::iterable>(value)) {
    out.push_back(static_cast<float>(v.cast<double>()));  // as torch.as_tensor(.., float32)
  }
  if (out.empty()) bad_op(position, op, "empty mean/std");
  return out;
}

std::array<uint8_t, 3> as_fill(py::handle value, size_t position, py::handle op) {
  std::vector<int> values;
  if (PyIndex_Check(value.ptr())) {
    values.assign(3, as_int(value, position, op));
  } else {
    for (py::handle v : py::reinterpret_borrow<py::iterable>(value)) {
      values.push_back(as_int(v, position, op));
    }
    if (values.size() == 1) values.assign(3, values[0]);
  }
  if (values.size() != 3) bad_op(position, op, "fill is an int or 1 or 3 ints");
  std::array<uint8_t, 3> fill{};
  for (int c = 0; c < 3; ++c) {
    if (values[c] < 0 || values[c] > 255) bad_op(position, op, "fill out of 0..255");
    fill[c] = static_cast<uint8_t>(values[c]);
  }
  return fill;
}

// One op list: PIL ops, then exactly one tensor stage (see /tmp/vision-interface.md).
ImagePlan parse_plan(py::handle ops) {
  if (!PyList_Check(ops.ptr()) && !PyTuple_Check(ops.ptr())) {
    throw py::type_error("image ops must be a list of tuples");
  }
  ImagePlan plan;
  bool staged = false;
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(ops);
  for (size_t i = 0; i < seq.size(); ++i) {
    py::handle op = seq[i];
    if (!PyTuple_Check(op.ptr()) || PyTuple_GET_SIZE(op.ptr()) == 0 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(op.ptr(), 0))) {
      bad_op(i, op, "expected a tuple (name, ...)");
    }
    const py::tuple t = py::reinterpret_borrow<py::tuple>(op);
    const std::string name = t[0].cast<std::string>();
    const size_t n = t.size() - 1;
    if (staged) bad_op(i, op, "the tensor stage must be the last op");
    auto want = [&](size_t count) {
      if (n != count) bad_op(i, op, "expected " + std::to_string(count) + " arguments");
    };
    ImageOp o;
    if (name == "crop") {
      want(4);
      o.kind = ImageOp::Kind::kCrop;
      o.top = as_int(t[1], i, op);
      o.left = as_int(t[2], i, op);
      o.height = as_int(t[3], i, op);
      o.width = as_int(t[4], i, op);
    } else if (name == "pad") {
      want(5);
      o.kind = ImageOp::Kind::kPad;
      o.left = as_int(t[1], i, op);
      o.top = as_int(t[2], i, op);
      o.right = as_int(t[3], i, op);
      o.bottom = as_int(t[4], i, op);
      o.fill = as_fill(t[5], i, op);
    } else if (name == "resize") {
      want(3);
      o.kind = ImageOp::Kind::kResize;
      o.height = as_int(t[1], i, op);
      o.width = as_int(t[2], i, op);
      const int interp = as_int(t[3], i, op);
      if (!is_supported_filter(interp)) {
        bad_op(i, op, "interpolation must be PIL's NEAREST (0), BILINEAR (2) or BICUBIC (3)");
      }
      o.filter = static_cast<ResampleFilter>(interp);
    } else if (name == "hflip" || name == "vflip") {
      want(0);
      o.kind = name == "hflip" ? ImageOp::Kind::kHFlip : ImageOp::Kind::kVFlip;
    } else if (name == "gray") {
      want(1);
      o.kind = ImageOp::Kind::kGray;
      o.channels = as_int(t[1], i, op);
      if (o.channels != 1 && o.channels != 3) bad_op(i, op, "channels must be 1 or 3");
    } else if (name == "pil_to_tensor" || name == "hwc") {
      want(0);
      plan.stage.layout = name == "hwc" ? TensorLayout::kUint8Hwc : TensorLayout::kUint8Chw;
      staged = true;
      continue;
    } else if (name == "to_tensor") {
      if (n != 0 && n != 2) bad_op(i, op, "expected no arguments, or mean and std");
      plan.stage.layout = TensorLayout::kFloat32Chw;
      if (n == 2) {
        plan.stage.mean = as_floats(t[1], i, op);
        plan.stage.std = as_floats(t[2], i, op);
        if (plan.stage.mean.size() != plan.stage.std.size()) {
          bad_op(i, op, "mean and std differ in length");
        }
      }
      staged = true;
      continue;
    } else {
      bad_op(i, op, "unknown op");
    }
    plan.ops.push_back(o);
  }
  if (!staged) {
    throw py::value_error("image ops must end with a tensor stage (pil_to_tensor, to_tensor, hwc)");
  }
  return plan;
}

at::ScalarType dtype_of(const TensorStage& stage) {
  return stage.layout == TensorLayout::kFloat32Chw ? at::kFloat : at::kByte;
}

at::Tensor tensor_of(const Image& image, const TensorStage& stage,
                     const std::vector<int64_t>& shape) {
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype_of(stage)));
  write_tensor(image, stage, out.data_ptr());
  return out;
}

at::Tensor load_image(py::handle path, py::handle ops, int64_t sample_index, bool fast) {
  const ImagePlan plan = parse_plan(ops);
  const std::string p = fs_path(path);
  py::gil_scoped_release release;
  const LoadedSample sample = load_sample(p, plan, DecodeOptions{fast}, sample_index);
  return tensor_of(sample.image, plan.stage, sample.shape);
}

void load_images(py::handle paths, py::handle ops_list, const at::Tensor& out, int num_threads,
                 int64_t first_index, bool fast) {
  std::vector<std::string> files;
  for (py::handle p : py::reinterpret_borrow<py::iterable>(paths)) files.push_back(fs_path(p));
  std::vector<ImagePlan> plans;
  for (py::handle ops : py::reinterpret_borrow<py::iterable>(ops_list)) {
    plans.push_back(parse_plan(ops));
  }
  if (files.size() != plans.size()) {
    throw py::value_error(std::to_string(files.size()) + " paths but " +
                          std::to_string(plans.size()) + " op lists");
  }
  if (!out.device().is_cpu() || !out.is_contiguous() || out.dim() < 1 ||
      out.size(0) != static_cast<int64_t>(files.size())) {
    throw py::value_error("out must be a contiguous CPU tensor with one row per path");
  }
  if (out.scalar_type() != at::kByte && out.scalar_type() != at::kFloat) {
    throw py::type_error("out must be uint8 or float32");
  }
  if (num_threads < 1) throw py::value_error("num_threads must be at least 1");
  if (files.empty()) return;
  BatchDestination dst;
  dst.data = static_cast<uint8_t*>(out.data_ptr());
  dst.element_size = out.element_size();
  dst.row_bytes = static_cast<size_t>(out.numel() / out.size(0)) * dst.element_size;
  dst.row_shape.assign(out.sizes().begin() + 1, out.sizes().end());
  py::gil_scoped_release release;
  load_image_batch(files, plans, dst, num_threads, first_index, DecodeOptions{fast});
}

// An image decoded elsewhere (PIL, for formats ferry does not decode), through the same ops.
at::Tensor transform_image(const at::Tensor& hwc, py::handle ops) {
  const ImagePlan plan = parse_plan(ops);
  if (hwc.scalar_type() != at::kByte || hwc.dim() != 3 || !hwc.device().is_cpu() ||
      (hwc.size(2) != 1 && hwc.size(2) != 3)) {
    throw py::value_error("image must be a uint8 CPU tensor H x W x C, C 1 (L) or 3 (RGB)");
  }
  const at::Tensor src = hwc.contiguous();
  py::gil_scoped_release release;
  const int c = static_cast<int>(src.size(2));
  Image image(static_cast<int>(src.size(1)), static_cast<int>(src.size(0)), c,
              c == 1 ? ColorMode::kGray : ColorMode::kRgb);
  std::memcpy(image.row(0), src.data_ptr(), static_cast<size_t>(src.numel()));
  image = apply_ops(std::move(image), plan.ops);
  check_tensor_stage(plan.stage, image.mode_channels());
  return tensor_of(image, plan.stage,
                   tensor_shape(plan.stage, image.width(), image.height(), image.mode_channels()));
}

py::dict image_codecs() {
  py::dict out;
  if (jpeg_available()) out["jpeg"] = jpeg_version();
  if (png_available()) out["png"] = png_version();
  return out;
}

}  // namespace

void register_image(py::module_& m) {
  decode_error_type = PyErr_NewExceptionWithDoc(
      "ferry._C.ImageDecodeError",
      "A corrupt, truncated or too large (decompression bomb) image file.", PyExc_RuntimeError,
      nullptr);
  unsupported_error_type = PyErr_NewExceptionWithDoc(
      "ferry._C.UnsupportedImageFormat",
      "An image format this build does not decode (PIL may).", decode_error_type, nullptr);
  if (decode_error_type == nullptr || unsupported_error_type == nullptr) {
    throw py::error_already_set();
  }
  m.add_object("ImageDecodeError", py::handle(decode_error_type));
  m.add_object("UnsupportedImageFormat", py::handle(unsupported_error_type));
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ImageError& e) {
      raise_image_error(e);
    }
  });

  m.def(
      "image_info",
      [](py::handle path) {
        const std::string p = fs_path(path);
        std::array<int, 2> size;
        {
          py::gil_scoped_release release;
          size = image_file_size(p);
        }
        return py::make_tuple(size[0], size[1]);
      },
      py::arg("path"),
      "(width, height) from the file's header; raises for a corrupt or unsupported file.");
  m.def("load_image", &load_image, py::arg("path"), py::arg("ops"),
        py::arg("sample_index") = -1, py::kw_only(), py::arg("fast") = false,
        "One sample: the file decoded as PIL's convert('RGB'), the ops applied, the tensor "
        "stage's tensor returned. GIL released.");
  m.def("load_images", &load_images, py::arg("paths"), py::arg("ops_list"), py::arg("out"),
        py::arg("num_threads"), py::arg("first_index") = 0, py::kw_only(),
        py::arg("fast") = false,
        "A batch: sample k written into out[k], on num_threads threads, GIL released. The "
        "error raised names the file and the sample index (first_index + k).");
  m.def("transform_image", &transform_image, py::arg("image"), py::arg("ops"),
        "The ops and tensor stage applied to a decoded uint8 H x W x C image (C 1: L, 3: RGB).");
  m.def("image_codecs", &image_codecs,
        "The codecs built in, e.g. {'jpeg': 'libjpeg-turbo 2.1.5', 'png': 'libpng 1.6.39'}.");
}

}  // namespace ferry
