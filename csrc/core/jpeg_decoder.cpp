#include "jpeg_decoder.h"

#ifdef FERRY_WITH_JPEG

#include <algorithm>
#include <csetjmp>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including their headers
#include <memory>
#include <vector>

#include <jerror.h>
#include <jpeglib.h>

namespace ferry {
namespace {

// A progressive file may hold any number of scans, each a pass over the whole image: a
// small file of thousands of scans would take minutes. Real files have a dozen or so.
constexpr int kMaxScans = 1000;

// All the decoder's state, plain C data, so that a longjmp out of libjpeg skips nothing
// that has a destructor. Value-initialised: cinfo.mem is null until libjpeg creates it,
// which makes jpeg_destroy_decompress safe in every state.
struct Session {
  jpeg_decompress_struct cinfo;
  struct {
    jpeg_error_mgr pub;  // first: libjpeg hands this out as cinfo->err
    jmp_buf jump;
    const char* own_message;  // a failure raised by ferry itself (truncation, scans)
    char message[JMSG_LENGTH_MAX];
  } err;
  jpeg_source_mgr source;
  jpeg_progress_mgr progress;
};

Session* session_of(j_common_ptr cinfo) {
  // cinfo is the first member of Session (standard layout): the cast is the C idiom.
  return reinterpret_cast<Session*>(cinfo);
}

[[noreturn]] void fail_with(j_common_ptr cinfo, const char* message) {
  session_of(cinfo)->err.own_message = message;
  (*cinfo->err->error_exit)(cinfo);
  __builtin_unreachable();  // error_exit never returns
}

void on_error_exit(j_common_ptr cinfo) {
  Session* s = session_of(cinfo);
  if (s->err.own_message == nullptr) (*cinfo->err->format_message)(cinfo, s->err.message);
  longjmp(s->err.jump, 1);
}

// PIL ignores libjpeg's warnings (corrupt entropy data is decoded as it comes), and so
// does ferry, to give the same pixels.
void on_emit_message(j_common_ptr, int) {}
void on_output_message(j_common_ptr) {}

void on_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxScans) fail_with(cinfo, "too many progressive scans");
}

// A memory source that treats running out of data as an error, as PIL does ("image file is
// truncated"), where libjpeg's own would insert an end marker and decode grey.
void source_init(j_decompress_ptr) {}
boolean source_fill(j_decompress_ptr cinfo) {
  fail_with(reinterpret_cast<j_common_ptr>(cinfo),
            "image file is truncated (the data ends before the image does)");
}
void source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  jpeg_source_mgr* src = cinfo->src;
  if (static_cast<size_t>(count) > src->bytes_in_buffer) source_fill(cinfo);
  src->next_input_byte += count;
  src->bytes_in_buffer -= static_cast<size_t>(count);
}
void source_term(j_decompress_ptr) {}

using Step = void (*)(Session*, void*);

// The one frame libjpeg's error exit jumps back to. Neither it nor the steps it runs hold
// an object with a destructor, so the jump skips none; the caller turns `false` into an
// exception.
__attribute__((noinline)) bool run_guarded(Session* s, Step step, void* arg) {
  if (setjmp(s->err.jump) != 0) return false;
  step(s, arg);
  return true;
}

void step_create(Session* s, void*) { jpeg_create_decompress(&s->cinfo); }

struct Input {
  const uint8_t* data;
  size_t size;
};

void step_read_header(Session* s, void* arg) {
  const auto* in = static_cast<const Input*>(arg);
  s->source.next_input_byte = in->data;
  s->source.bytes_in_buffer = in->size;
  s->source.init_source = source_init;
  s->source.fill_input_buffer = source_fill;
  s->source.skip_input_data = source_skip;
  s->source.resync_to_restart = jpeg_resync_to_restart;
  s->source.term_source = source_term;
  s->cinfo.src = &s->source;
  s->progress.progress_monitor = on_progress;
  s->cinfo.progress = &s->progress;
  jpeg_read_header(&s->cinfo, TRUE);
}

void step_calc_output(Session* s, void*) { jpeg_calc_output_dimensions(&s->cinfo); }
void step_start(Session* s, void*) { jpeg_start_decompress(&s->cinfo); }

struct Crop {
  JDIMENSION xoffset;
  JDIMENSION width;
  JDIMENSION skip_rows;
};

void step_crop(Session* s, void* arg) {
  auto* crop = static_cast<Crop*>(arg);
  if (crop->width < s->cinfo.output_width) {
    jpeg_crop_scanline(&s->cinfo, &crop->xoffset, &crop->width);
  }
  if (crop->skip_rows > 0) jpeg_skip_scanlines(&s->cinfo, crop->skip_rows);
}

// PIL's MULDIV255: a * b / 255, rounded, in integers.
inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

struct Rows {
  uint8_t* dst;
  ptrdiff_t stride;
  int count;
  uint8_t* cmyk;  // a row of 4-channel scratch when the file is CMYK/YCCK, else null
};

void step_read_rows(Session* s, void* arg) {
  const auto* rows = static_cast<const Rows*>(arg);
  const int width = static_cast<int>(s->cinfo.output_width);
  for (int r = 0; r < rows->count; ++r) {
    uint8_t* out = rows->dst + r * rows->stride;
    JSAMPROW row = rows->cmyk != nullptr ? rows->cmyk : out;
    jpeg_read_scanlines(&s->cinfo, &row, 1);
    if (rows->cmyk == nullptr) continue;
    // PIL reads CMYK JPEGs inverted ("CMYK;I": Adobe's convention), then converts to RGB.
    for (int x = 0; x < width; ++x) {
      const uint8_t* p = rows->cmyk + 4 * x;
      const int nk = p[3];  // 255 - (255 - k)
      for (int c = 0; c < 3; ++c) {
        out[3 * x + c] = static_cast<uint8_t>(nk - muldiv255(255 - p[c], nk));
      }
    }
  }
}

// Decoding the last row makes libjpeg read the entropy data of every row before it: a
// truncated file fails here as it fails in PIL, which decodes the whole image.
void step_check_rest(Session* s, void* arg) {
  jpeg_decompress_struct& ci = s->cinfo;
  if (ci.output_scanline + 1 < ci.output_height) {
    jpeg_skip_scanlines(&ci, ci.output_height - 1 - ci.output_scanline);
  }
  JSAMPROW row = static_cast<JSAMPROW>(arg);
  jpeg_read_scanlines(&ci, &row, 1);
}

bool is_unsupported(int msg_code) {
  switch (msg_code) {
    case JERR_SOF_UNSUPPORTED:
    case JERR_BAD_PRECISION:
    case JERR_NOT_COMPILED:
    case JERR_ARITH_NOTIMPL:
    case JERR_CONVERSION_NOTIMPL:
      return true;
    default:
      return false;
  }
}

// Destroys the libjpeg state with the Session: a member, so that it also runs when the
// Decoder's constructor throws (a destructor of the Decoder would not).
struct SessionDeleter {
  void operator()(Session* s) const {
    jpeg_destroy_decompress(&s->cinfo);  // safe in every state: cinfo.mem starts null
    delete s;
  }
};

class Decoder {
 public:
  Decoder(const uint8_t* data, size_t size) : s_(new Session{}), input_{data, size} {
    s_->cinfo.err = jpeg_std_error(&s_->err.pub);
    s_->err.pub.error_exit = on_error_exit;
    s_->err.pub.emit_message = on_emit_message;
    s_->err.pub.output_message = on_output_message;
    run(step_create);
    run(step_read_header, &input_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  jpeg_decompress_struct& cinfo() { return s_->cinfo; }

  void run(Step step, void* arg = nullptr) {
    if (run_guarded(s_.get(), step, arg)) return;
    if (s_->err.own_message != nullptr) {
      throw ImageError(ImageErrorKind::kCorrupt, std::string("JPEG: ") + s_->err.own_message);
    }
    const int code = s_->err.pub.msg_code;
    const ImageErrorKind kind = code == JERR_IMAGE_TOO_BIG ? ImageErrorKind::kTooLarge
                                : is_unsupported(code)     ? ImageErrorKind::kUnsupported
                                                           : ImageErrorKind::kCorrupt;
    const char* prefix = kind == ImageErrorKind::kTooLarge
                             ? "JPEG: image too large, refused as a decompression bomb: "
                             : "JPEG: ";
    throw ImageError(kind, prefix + std::string(s_->err.message));
  }

 private:
  std::unique_ptr<Session, SessionDeleter> s_;
  Input input_;
};

bool ends_with_eoi(const uint8_t* data, size_t size) {
  return size >= 2 && data[size - 2] == 0xFF && data[size - 1] == JPEG_EOI;
}

// One iMCU of context on each side where a component is upsampled (fancy upsampling
// reads the neighbouring chroma samples), in output pixels; 0 where none is.
void context_margins(const jpeg_decompress_struct& ci, int* mx, int* my) {
  bool up_x = false;
  bool up_y = false;
  for (int c = 0; c < ci.num_components; ++c) {
    up_x = up_x || ci.comp_info[c].h_samp_factor != ci.max_h_samp_factor;
    up_y = up_y || ci.comp_info[c].v_samp_factor != ci.max_v_samp_factor;
  }
  *mx = up_x ? ci.max_h_samp_factor * ci.min_DCT_scaled_size : 0;
  *my = up_y ? ci.max_v_samp_factor * ci.min_DCT_scaled_size : 0;
}

}  // namespace

bool jpeg_available() { return true; }

std::string jpeg_version() {
#ifdef LIBJPEG_TURBO_VERSION
#define FERRY_STR2(x) #x
#define FERRY_STR(x) FERRY_STR2(x)
  return "libjpeg-turbo " FERRY_STR(LIBJPEG_TURBO_VERSION);
#undef FERRY_STR
#undef FERRY_STR2
#else
  return "libjpeg " + std::to_string(JPEG_LIB_VERSION);
#endif
}

JpegInfo jpeg_read_info(const uint8_t* data, size_t size) {
  Decoder d(data, size);
  const jpeg_decompress_struct& ci = d.cinfo();
  check_image_size(ci.image_width, ci.image_height);
  return {static_cast<int>(ci.image_width), static_cast<int>(ci.image_height),
          ci.num_components};
}

int jpeg_scaled_length(int length, int scale_eighths) {
  return static_cast<int>((static_cast<int64_t>(length) * scale_eighths + 7) / 8);
}

Image jpeg_decode(const uint8_t* data, size_t size, const JpegOptions& options) {
  FERRY_CHECK(options.scale_eighths >= 1 && options.scale_eighths <= 8, "JPEG scale ",
              options.scale_eighths, "/8");
  FERRY_CHECK(options.fast || options.scale_eighths == 8, "DCT scaling is the fast mode's");
  Decoder d(data, size);
  jpeg_decompress_struct& ci = d.cinfo();
  check_image_size(ci.image_width, ci.image_height);
  int channels = 3;
  switch (ci.num_components) {
    case 1:
      ci.out_color_space = JCS_GRAYSCALE;
      channels = 1;
      break;
    case 3:
      ci.out_color_space = JCS_RGB;
      break;
    case 4:
      ci.out_color_space = JCS_CMYK;
      break;
    default:
      throw ImageError(ImageErrorKind::kUnsupported,
                       "JPEG: cannot handle " + std::to_string(ci.num_components) +
                           "-layer images");
  }
  ci.dct_method = options.fast ? JDCT_IFAST : JDCT_ISLOW;
  ci.do_fancy_upsampling = options.fast ? FALSE : TRUE;
  ci.scale_num = static_cast<unsigned int>(options.scale_eighths);
  ci.scale_denom = 8;
  d.run(step_calc_output);

  const int out_w = static_cast<int>(ci.output_width);
  const int out_h = static_cast<int>(ci.output_height);
  PixelRect r = options.region;
  if (r.width == 0) r = {0, 0, out_w, out_h};
  FERRY_CHECK(r.left >= 0 && r.top >= 0 && r.width > 0 && r.height > 0 &&
                  r.left + r.width <= out_w && r.top + r.height <= out_h,
              "JPEG region ", r.width, "x", r.height, " at (", r.left, ", ", r.top,
              ") outside the ", out_w, "x", out_h, " image");
  int mx = 0;
  int my = 0;
  context_margins(ci, &mx, &my);
  const int x0 = std::max(0, r.left - mx);
  const int x1 = std::min(out_w, r.left + r.width + mx);
  const int y0 = std::max(0, r.top - my);
  Crop crop{static_cast<JDIMENSION>(x0), static_cast<JDIMENSION>(x1 - x0),
            static_cast<JDIMENSION>(y0)};

  d.run(step_start);
  d.run(step_crop, &crop);  // crop.xoffset/width now on iMCU boundaries
  const int rows = r.top + r.height - y0;
  Image image(static_cast<int>(crop.width), rows, channels, ColorMode::kRgb);
  std::vector<uint8_t> scratch;
  if (ci.num_components == 4 || !ends_with_eoi(data, size)) {
    scratch.resize(static_cast<size_t>(ci.output_width) * ci.output_components);
  }
  Rows out{image.row(0), image.stride(), rows,
           ci.num_components == 4 ? scratch.data() : nullptr};
  d.run(step_read_rows, &out);
  if (ci.output_scanline < ci.output_height && !ends_with_eoi(data, size)) {
    d.run(step_check_rest, scratch.data());
  }
  image.narrow(r.left - static_cast<int>(crop.xoffset), r.top - y0, r.width, r.height);
  return image;
}

}  // namespace ferry

#else  // !FERRY_WITH_JPEG

namespace ferry {
namespace {
[[noreturn]] void no_jpeg() {
  throw ImageError(ImageErrorKind::kUnsupported,
                   "ferry was built without libjpeg: JPEG files are decoded by PIL");
}
}  // namespace

bool jpeg_available() { return false; }
std::string jpeg_version() { return {}; }
JpegInfo jpeg_read_info(const uint8_t*, size_t) { no_jpeg(); }
int jpeg_scaled_length(int length, int scale_eighths) {
  return static_cast<int>((static_cast<int64_t>(length) * scale_eighths + 7) / 8);
}
Image jpeg_decode(const uint8_t*, size_t, const JpegOptions&) { no_jpeg(); }

}  // namespace ferry

#endif
