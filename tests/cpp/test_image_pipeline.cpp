// The sample pipeline: files to tensors, region decodes equal to decode-then-crop, batches
// on threads equal to samples one by one, errors that name the file and the lowest index.
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/image_ops.h"
#include "core/image_pipeline.h"
#include "core/jpeg_decoder.h"
#include "harness.h"
#include "image_checks.h"
#include "image_samples.h"

#if defined(FERRY_WITH_JPEG) && defined(FERRY_WITH_PNG)
#include <png.h>

using ferry::Image;
using ferry::ImageOp;
using ferry::ImagePlan;

namespace {

ImageOp crop(int left, int top, int width, int height) {
  ImageOp op;
  op.kind = ImageOp::Kind::kCrop;
  op.left = left;
  op.top = top;
  op.width = width;
  op.height = height;
  return op;
}

ImageOp resize(int width, int height, ferry::ResampleFilter filter) {
  ImageOp op;
  op.kind = ImageOp::Kind::kResize;
  op.width = width;
  op.height = height;
  op.filter = filter;
  return op;
}

ImageOp flip() {
  ImageOp op;
  op.kind = ImageOp::Kind::kHFlip;
  return op;
}

struct Files {
  image_samples::TempDir dir;
  std::vector<std::string> paths;
};

void make_files(Files& f, int count) {
  for (int i = 0; i < count; ++i) {
    const auto pixels = image_samples::synthetic(90 + 7 * i, 70 + 3 * i, i % 3 == 2 ? 1 : 3, i);
    if (i % 4 == 3) {
      std::vector<std::vector<uint8_t>> rows;
      for (int y = 0; y < pixels.height; ++y) {
        rows.emplace_back(pixels.data.begin() + size_t(y) * pixels.width * pixels.channels,
                          pixels.data.begin() + size_t(y + 1) * pixels.width * pixels.channels);
      }
      const int type = pixels.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB;
      f.paths.push_back(f.dir.write("img" + std::to_string(i) + ".png",
                                    image_samples::encode_png(pixels.width, pixels.height, type,
                                                              8, false, rows)));
    } else {
      image_samples::JpegSpec spec;
      spec.progressive = i % 2 == 1;
      f.paths.push_back(f.dir.write("img" + std::to_string(i) + ".jpg",
                                    image_samples::encode_jpeg(pixels, spec)));
    }
  }
}

ImagePlan plan_for(int i) {
  ImagePlan plan;
  plan.ops = {crop(-3 + i, 5, 60, 50), resize(32, 24, ferry::ResampleFilter::kBilinear)};
  if (i % 2) plan.ops.push_back(flip());
  plan.stage.layout = ferry::TensorLayout::kFloat32Chw;
  plan.stage.mean = {0.5f};
  plan.stage.std = {0.25f};
  return plan;
}

template <typename Fn>
ferry::ImageError expect_error(Fn fn) {
  try {
    fn();
  } catch (const ferry::ImageError& e) {
    return e;
  }
  return ferry::ImageError(ferry::ImageErrorKind::kInternal, "(no error raised)");
}

}  // namespace

FERRY_TEST(pipeline_region_decode_equals_decode_then_crop) {
  Files f;
  make_files(f, 6);
  std::mt19937 rng(3);
  for (const std::string& path : f.paths) {
    const Image full = ferry::load_transformed(path, {}, {}, -1);
    for (int t = 0; t < 30; ++t) {
      // Crops inside, across the edges, and wholly outside the image.
      const int w = std::uniform_int_distribution<int>(1, full.width() + 20)(rng);
      const int h = std::uniform_int_distribution<int>(1, full.height() + 20)(rng);
      const int x = std::uniform_int_distribution<int>(-25, full.width())(rng);
      const int y = std::uniform_int_distribution<int>(-25, full.height())(rng);
      const Image got = ferry::load_transformed(path, {crop(x, y, w, h)}, {}, -1);
      const Image expect =
          ferry::crop_image(image_checks::copy_rect(full, 0, 0, full.width(), full.height()), x,
                            y, w, h);
      const std::string diff = image_checks::difference(got, expect);
      EXPECT(diff.empty(), ": ", path, " crop ", w, "x", h, " at (", x, ", ", y, "): ", diff);
      if (!diff.empty()) return;
    }
  }
}

FERRY_TEST(pipeline_batch_on_threads_equals_samples_one_by_one) {
  Files f;
  make_files(f, 9);
  std::vector<ImagePlan> plans;
  for (int i = 0; i < 9; ++i) plans.push_back(plan_for(i));
  const size_t row = 3 * 24 * 32;
  for (int threads : {1, 3, 16}) {
    std::vector<float> out(9 * row, -1.0f);
    ferry::BatchDestination dst{reinterpret_cast<uint8_t*>(out.data()), row * sizeof(float),
                                {3, 24, 32}, sizeof(float)};
    ferry::load_image_batch(f.paths, plans, dst, threads, 100, {});
    for (int i = 0; i < 9; ++i) {
      const ferry::LoadedSample s = ferry::load_sample(f.paths[i], plans[i], {}, i);
      std::vector<float> one(row);
      ferry::write_tensor(s.image, plans[i].stage, one.data());
      EXPECT(std::memcmp(one.data(), out.data() + i * row, row * sizeof(float)) == 0,
             ": sample ", i, " with ", threads, " threads");
    }
  }
}

FERRY_TEST(pipeline_batch_error_names_the_lowest_failing_sample) {
  Files f;
  make_files(f, 8);
  f.paths[6] = f.dir.write("bad6.jpg", {0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3});
  f.paths[2] = f.dir.write("bad2.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0});
  f.paths[5] = f.dir.path() + "/missing.jpg";
  std::vector<ImagePlan> plans;
  for (int i = 0; i < 8; ++i) plans.push_back(plan_for(i));
  std::vector<float> out(8 * 3 * 24 * 32);
  ferry::BatchDestination dst{reinterpret_cast<uint8_t*>(out.data()), 3 * 24 * 32 * sizeof(float),
                              {3, 24, 32}, sizeof(float)};
  for (int threads : {1, 4}) {
    const ferry::ImageError e =
        expect_error([&] { ferry::load_image_batch(f.paths, plans, dst, threads, 40, {}); });
    const std::string what = e.what();
    EXPECT(e.kind() == ferry::ImageErrorKind::kCorrupt, ": ", what);
    EXPECT(what.find("bad2.png") != std::string::npos, ": ", what);
    EXPECT(what.find("(sample 42)") != std::string::npos, ": ", what);
  }
  const ferry::ImageError missing =
      expect_error([&] { ferry::load_sample(f.paths[5], plans[5], {}, 7); });
  EXPECT(missing.kind() == ferry::ImageErrorKind::kIo && missing.sys_errno() == ENOENT);
  EXPECT(std::string(missing.what()).find("(sample 7)") != std::string::npos);
  const ferry::ImageError text = expect_error(
      [&] { ferry::load_sample(f.dir.write("notes.txt", {'h', 'i'}), plans[0], {}, 3); });
  EXPECT(text.kind() == ferry::ImageErrorKind::kUnsupported, ": ", text.what());
}

FERRY_TEST(pipeline_batch_checks_the_row_shape) {
  Files f;
  make_files(f, 2);
  std::vector<ImagePlan> plans = {plan_for(0), plan_for(1)};
  std::vector<float> out(2 * 3 * 24 * 32);
  ferry::BatchDestination dst{reinterpret_cast<uint8_t*>(out.data()), 3 * 24 * 32 * sizeof(float),
                              {3, 32, 24}, sizeof(float)};
  const ferry::ImageError e =
      expect_error([&] { ferry::load_image_batch(f.paths, plans, dst, 2, 0, {}); });
  EXPECT(e.kind() == ferry::ImageErrorKind::kBadArgument, ": ", e.what());
  EXPECT(std::string(e.what()).find("(sample 0)") != std::string::npos, ": ", e.what());
}

FERRY_TEST(pipeline_fast_mode_stays_close) {
  // Declared inexact: DCT scaling + fast IDCT. Bounded, not equal.
  const auto pixels = image_samples::synthetic(480, 360, 3, 11);
  image_samples::TempDir dir;
  const std::string path = dir.write("big.jpg", image_samples::encode_jpeg(pixels, {}));
  const std::vector<ImageOp> ops = {crop(16, 20, 400, 300),
                                    resize(64, 48, ferry::ResampleFilter::kBilinear)};
  const Image exact = ferry::load_transformed(path, ops, {false}, -1);
  const Image fast = ferry::load_transformed(path, ops, {true}, -1);
  REQUIRE(fast.width() == 64 && fast.height() == 48 && fast.channels() == 3);
  double sum = 0;
  for (int y = 0; y < 48; ++y) {
    for (int i = 0; i < 64 * 3; ++i) sum += std::abs(exact.row(y)[i] - fast.row(y)[i]);
  }
  EXPECT(sum / (64 * 48 * 3) < 8.0, ": mean difference ", sum / (64 * 48 * 3));
}

#endif
