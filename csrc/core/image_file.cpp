#include "image_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "image.h"
#include "jpeg_decoder.h"
#include "png_decoder.h"

namespace ferry {
namespace {

[[noreturn]] void io_error(const std::string& what, int err) {
  throw ImageError(ImageErrorKind::kIo, what + ": " + std::strerror(err), err);
}

// Closes the descriptor on every way out.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

FileBytes read_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) io_error("cannot open the file", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) io_error("cannot stat the file", errno);
  if (S_ISDIR(st.st_mode)) io_error("cannot read the file", EISDIR);
  // One byte more than fstat says, so that a read returning 0 ends a file of that size
  // without growing the buffer; a file still being written grows it.
  size_t capacity = static_cast<size_t>(std::max<off_t>(st.st_size, 0)) + 1;
  FileBytes out;
  out.data.reset(new uint8_t[capacity]);
  for (;;) {
    if (out.size == capacity) {
      std::unique_ptr<uint8_t[]> bigger(new uint8_t[capacity * 2]);
      std::memcpy(bigger.get(), out.data.get(), out.size);
      out.data = std::move(bigger);
      capacity *= 2;
    }
    const ssize_t n = ::read(fd.get(), out.data.get() + out.size, capacity - out.size);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      io_error("cannot read the file", errno);
    }
    out.size += static_cast<size_t>(n);
  }
  return out;
}

ImageFormat sniff_format(const uint8_t* data, size_t size) {
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    return ImageFormat::kJpeg;
  }
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::kPng;
  return ImageFormat::kUnknown;
}

ImageSize read_image_size(const uint8_t* data, size_t size) {
  switch (sniff_format(data, size)) {
    case ImageFormat::kJpeg: {
      const JpegInfo info = jpeg_read_info(data, size);
      return {info.width, info.height};
    }
    case ImageFormat::kPng: {
      const PngInfo info = png_read_info(data, size);
      return {info.width, info.height};
    }
    case ImageFormat::kUnknown:
      break;
  }
  throw ImageError(ImageErrorKind::kUnsupported,
                   "not a JPEG or PNG file (ferry decodes those; other formats go to PIL)");
}

}  // namespace ferry
