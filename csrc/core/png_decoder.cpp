#include "png_decoder.h"

#ifdef FERRY_WITH_PNG

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace ferry {
namespace {

// The decoder's state: plain C data, so that libpng's longjmp skips no destructor.
struct Session {
  png_structp png;
  png_infop info;
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void on_error(png_structp png, png_const_charp message) {
  auto* s = static_cast<Session*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof s->message, "%s", message);
  png_longjmp(png, 1);
}

// PIL does not look at what libpng warns about (unknown or damaged ancillary data).
void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep out, size_t count) {
  auto* s = static_cast<Session*>(png_get_io_ptr(png));
  if (count > s->size - s->pos) {
    png_error(png, "image file is truncated (the data ends before the image does)");
  }
  std::memcpy(out, s->data + s->pos, count);
  s->pos += count;
}

using Step = void (*)(Session*, void*);

// The one frame libpng's error exit jumps back to; neither it nor the steps it runs hold
// an object with a destructor. The caller turns `false` into an exception.
__attribute__((noinline)) bool run_guarded(Session* s, Step step, void* arg) {
  if (setjmp(png_jmpbuf(s->png)) != 0) return false;
  step(s, arg);
  return true;
}

// Ancillary chunks change nothing PIL's convert("RGB") gives, so libpng skips them (still
// checking their CRCs: PIL rejects a damaged chunk before the image data).
constexpr png_byte kIgnoredChunks[] =
    "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0"
    "tEXt\0tIME\0tRNS\0zTXt";
constexpr int kIgnoredChunkCount = 18;

void step_read_info(Session* s, void*) {
  png_set_read_fn(s->png, s, on_read);
  // ferry's own limit (PIL's) decides how large an image may be, not libpng's defaults.
  png_set_user_limits(s->png, 0x7fffffff, 0x7fffffff);
  png_set_crc_action(s->png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
  png_set_check_for_invalid_index(s->png, 0);  // PIL looks indices past the palette up too
  png_set_keep_unknown_chunks(s->png, PNG_HANDLE_CHUNK_NEVER, nullptr, 0);
  png_set_keep_unknown_chunks(s->png, PNG_HANDLE_CHUNK_NEVER, kIgnoredChunks,
                              kIgnoredChunkCount);
  png_read_info(s->png, s->info);
}

// What libpng is asked to deliver, and what ferry converts after it.
enum class Raw { kDirect, kPaletteIndex, kGray16 };

struct Setup {
  int color_type;
  int bit_depth;
  Raw raw;
};

void step_setup(Session* s, void* arg) {
  auto* setup = static_cast<Setup*>(arg);
  png_structp png = s->png;
  const int bits = setup->bit_depth;
  setup->raw = Raw::kDirect;
  switch (setup->color_type) {
    case PNG_COLOR_TYPE_GRAY:
      if (bits < 8) png_set_expand_gray_1_2_4_to_8(png);
      if (bits == 16) setup->raw = Raw::kGray16;
      break;
    case PNG_COLOR_TYPE_PALETTE:
      if (bits < 8) png_set_packing(png);
      setup->raw = Raw::kPaletteIndex;
      break;
    default:  // RGB, gray+alpha, RGBA
      png_set_strip_alpha(png);
      if (bits == 16) png_set_strip_16(png);
      break;
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, s->info);
}

void step_read_image(Session* s, void* rows) {
  png_read_image(s->png, static_cast<png_bytepp>(rows));
}

// Destroys the libpng state with the Session: a member, so that it also runs when the
// Decoder's constructor throws (a destructor of the Decoder would not).
struct SessionDeleter {
  void operator()(Session* s) const {
    if (s->png != nullptr) png_destroy_read_struct(&s->png, &s->info, nullptr);
    delete s;
  }
};

class Decoder {
 public:
  Decoder(const uint8_t* data, size_t size) : s_(new Session{}) {
    s_->data = data;
    s_->size = size;
    s_->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s_.get(), on_error, on_warning);
    if (s_->png == nullptr) throw std::bad_alloc();
    s_->info = png_create_info_struct(s_->png);
    if (s_->info == nullptr) throw std::bad_alloc();
    run(step_read_info);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  png_structp png() { return s_->png; }
  png_infop info() { return s_->info; }

  void run(Step step, void* arg = nullptr) {
    if (!run_guarded(s_.get(), step, arg)) {
      throw ImageError(ImageErrorKind::kCorrupt, std::string("PNG: ") + s_->message);
    }
  }

 private:
  std::unique_ptr<Session, SessionDeleter> s_;
};

PngInfo info_of(Decoder& d) {
  PngInfo out;
  out.width = static_cast<int>(png_get_image_width(d.png(), d.info()));
  out.height = static_cast<int>(png_get_image_height(d.png(), d.info()));
  out.bit_depth = png_get_bit_depth(d.png(), d.info());
  out.color_type = png_get_color_type(d.png(), d.info());
  out.interlaced = png_get_interlace_type(d.png(), d.info()) != PNG_INTERLACE_NONE;
  check_image_size(png_get_image_width(d.png(), d.info()),
                   png_get_image_height(d.png(), d.info()));
  return out;
}

// PIL's palette: the file's PLTE entries, black past them.
void palette_of(Decoder& d, uint8_t table[256][3]) {
  std::memset(table, 0, 256 * 3);
  png_colorp entries = nullptr;
  int count = 0;
  if (png_get_PLTE(d.png(), d.info(), &entries, &count) != 0) {
    for (int i = 0; i < count && i < 256; ++i) {
      table[i][0] = entries[i].red;
      table[i][1] = entries[i].green;
      table[i][2] = entries[i].blue;
    }
  }
}

}  // namespace

bool png_available() { return true; }

std::string png_version() { return std::string("libpng ") + png_get_libpng_ver(nullptr); }

PngInfo png_read_info(const uint8_t* data, size_t size) {
  Decoder d(data, size);
  return info_of(d);
}

Image png_decode(const uint8_t* data, size_t size) {
  Decoder d(data, size);
  const PngInfo info = info_of(d);
  Setup setup{info.color_type, info.bit_depth, Raw::kDirect};
  d.run(step_setup, &setup);
  const bool gray = info.color_type == PNG_COLOR_TYPE_GRAY ||
                    info.color_type == PNG_COLOR_TYPE_GRAY_ALPHA;
  Image image(info.width, info.height, gray ? 1 : 3, ColorMode::kRgb);
  const size_t rowbytes = png_get_rowbytes(d.png(), d.info());
  std::vector<png_bytep> rows(static_cast<size_t>(info.height));
  std::unique_ptr<uint8_t[]> raw;
  if (setup.raw == Raw::kDirect) {
    FERRY_CHECK(rowbytes == static_cast<size_t>(info.width) * image.channels(),
                "libpng rows of ", rowbytes, " bytes");
    for (int y = 0; y < info.height; ++y) rows[y] = image.row(y);
  } else {
    const size_t sample = setup.raw == Raw::kGray16 ? 2 : 1;
    FERRY_CHECK(rowbytes == static_cast<size_t>(info.width) * sample, "libpng rows of ",
                rowbytes, " bytes");
    raw.reset(new uint8_t[rowbytes * static_cast<size_t>(info.height)]);
    for (int y = 0; y < info.height; ++y) rows[y] = raw.get() + y * rowbytes;
  }
  d.run(step_read_image, rows.data());

  if (setup.raw == Raw::kPaletteIndex) {
    uint8_t table[256][3];
    palette_of(d, table);
    for (int y = 0; y < info.height; ++y) {
      const uint8_t* in = rows[y];
      uint8_t* out = image.row(y);
      for (int x = 0; x < info.width; ++x) std::memcpy(out + 3 * x, table[in[x]], 3);
    }
  } else if (setup.raw == Raw::kGray16) {
    for (int y = 0; y < info.height; ++y) {
      const uint8_t* in = rows[y];
      uint8_t* out = image.row(y);
      for (int x = 0; x < info.width; ++x) out[x] = in[2 * x] != 0 ? 255 : in[2 * x + 1];
    }
  }
  return image;
}

}  // namespace ferry

#else  // !FERRY_WITH_PNG

namespace ferry {
namespace {
[[noreturn]] void no_png() {
  throw ImageError(ImageErrorKind::kUnsupported,
                   "ferry was built without libpng: PNG files are decoded by PIL");
}
}  // namespace

bool png_available() { return false; }
std::string png_version() { return {}; }
PngInfo png_read_info(const uint8_t*, size_t) { no_png(); }
Image png_decode(const uint8_t*, size_t) { no_png(); }

}  // namespace ferry

#endif
