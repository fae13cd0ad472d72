// Image files: their bytes, their format, their size from the header. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ferry {

enum class ImageFormat { kUnknown, kJpeg, kPng };

// A file's whole content (throws ImageError kIo with errno when it cannot be read).
struct FileBytes {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;
};
FileBytes read_file(const std::string& path);

// From the first bytes (the signatures: JPEG's SOI marker, PNG's 8 bytes).
ImageFormat sniff_format(const uint8_t* data, size_t size);

struct ImageSize {
  int width = 0;
  int height = 0;
};

// The size the header declares, checked against the decompression-bomb limit. Throws
// kUnsupported for a format this build does not decode, kCorrupt for a malformed header.
ImageSize read_image_size(const uint8_t* data, size_t size);

}  // namespace ferry
