// JPEG round trip through libjpeg-turbo with the settings TensorFlow uses.
//
// What TensorFlow does (tensorflow/core/ops/image_ops.cc, core/lib/jpeg/jpeg_mem.cc,
// core/kernels/image/decode_image_op.cc):
// * EncodeJpeg's attributes default to quality 95, chroma_downsampling true,
//   optimize_size false, progressive false.  CompressInternal calls jpeg_set_defaults
//   (3-component RGB input -> YCbCr with 2x2 luma sampling, i.e. 4:2:0, and JDCT_ISLOW,
//   libjpeg's default DCT) and then jpeg_set_quality(quality, force_baseline=TRUE); it
//   never sets dct_method, so the encoder runs the accurate integer forward DCT.
// * DecodeImage sets flags_.dct_method = JDCT_IFAST ("the TensorFlow-chosen default ...
//   sacrificing image quality for speed") and UncompressLow copies it to
//   cinfo.dct_method, sets cinfo.do_fancy_upsampling from fancy_upscaling (default true)
//   and out_color_space = JCS_RGB for 3 channels.
//
// libjpeg reports fatal errors through error_exit, which must not return.  Here it
// longjmps, and every libjpeg call that can fail runs inside encode_image() or
// decode_image(): plain functions that hold no object with a destructor, so the jump
// skips no C++ cleanup.  Their callers own the libjpeg objects through RAII guards and
// turn a failure into an exception.
#include <csetjmp>
#include <cstddef>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including their headers
#include <stdexcept>
#include <string>
#include <vector>

#include <jerror.h>
#include <jpeglib.h>

#include "internal.h"

// The numpy specification reproduces libjpeg-turbo's integer arithmetic (its tables, DCT
// scaling and upsampling); other libjpeg implementations (IJG libjpeg 7+) round differently.
#ifndef LIBJPEG_TURBO_VERSION
#error "rdvla needs libjpeg-turbo's libjpeg API (jpeglib.h from libjpeg-turbo)"
#endif

namespace rdvla {
namespace {

constexpr int kQuality = 95;

struct ErrorState {
  jpeg_error_mgr manager;  // first member: libjpeg hands back &manager as cinfo->err
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jump_on_error(j_common_ptr cinfo) {
  auto* state = reinterpret_cast<ErrorState*>(cinfo->err);
  cinfo->err->format_message(cinfo, state->message);
  std::longjmp(state->jump, 1);
}

void init_error_state(ErrorState& state) {
  jpeg_std_error(&state.manager);
  state.manager.error_exit = jump_on_error;
  state.message[0] = '\0';
}

// Destination: a buffer sized for the worst case, so libjpeg never asks for more room.
void sink_init(j_compress_ptr) {}
boolean sink_full(j_compress_ptr cinfo) {
  ERREXIT(cinfo, JERR_BUFFER_SIZE);
  return FALSE;
}
void sink_term(j_compress_ptr) {}

// Source: the whole stream is in memory, so running out of data is an error.
void source_init(j_decompress_ptr) {}
boolean source_empty(j_decompress_ptr cinfo) {
  ERREXIT(cinfo, JERR_INPUT_EOF);
  return FALSE;
}
void source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  if (static_cast<std::size_t>(count) > cinfo->src->bytes_in_buffer) ERREXIT(cinfo, JERR_INPUT_EOF);
  cinfo->src->next_input_byte += count;
  cinfo->src->bytes_in_buffer -= static_cast<std::size_t>(count);
}
void source_term(j_decompress_ptr) {}

// Upper bound of a baseline 4:2:0 JPEG stream: 3 bytes per pixel of the image padded to
// whole 16x16 MCUs, plus room for the headers (the bound libjpeg-turbo's tjBufSize uses).
std::size_t jpeg_size_bound(int height, int width) {
  const auto padded = [](int v) { return static_cast<std::size_t>((v + 15) / 16 * 16); };
  return padded(height) * padded(width) * 3 + 2048;
}

// Returns the stream length, or 0 after a libjpeg error (message in err->message).
std::size_t encode_image(jpeg_compress_struct* cinfo, ErrorState* err, JSAMPARRAY rows,
                         int height, int width, jpeg_destination_mgr* sink,
                         std::size_t capacity) {
  if (setjmp(err->jump)) return 0;
  jpeg_create_compress(cinfo);
  cinfo->dest = sink;
  cinfo->image_width = static_cast<JDIMENSION>(width);
  cinfo->image_height = static_cast<JDIMENSION>(height);
  cinfo->input_components = 3;
  cinfo->in_color_space = JCS_RGB;
  jpeg_set_defaults(cinfo);
  jpeg_set_quality(cinfo, kQuality, TRUE);
  jpeg_start_compress(cinfo, TRUE);
  jpeg_write_scanlines(cinfo, rows, static_cast<JDIMENSION>(height));
  jpeg_finish_compress(cinfo);
  return capacity - sink->free_in_buffer;
}

// Returns false after a libjpeg error or when the decoded size differs.
bool decode_image(jpeg_decompress_struct* cinfo, ErrorState* err, jpeg_source_mgr* source,
                  JSAMPARRAY rows, int height, int width) {
  if (setjmp(err->jump)) return false;
  jpeg_create_decompress(cinfo);
  cinfo->src = source;
  jpeg_read_header(cinfo, TRUE);
  cinfo->out_color_space = JCS_RGB;
  cinfo->dct_method = JDCT_IFAST;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_width != static_cast<JDIMENSION>(width) ||
      cinfo->output_height != static_cast<JDIMENSION>(height) || cinfo->output_components != 3)
    return false;
  while (cinfo->output_scanline < cinfo->output_height)
    jpeg_read_scanlines(cinfo, rows + cinfo->output_scanline,
                        cinfo->output_height - cinfo->output_scanline);
  jpeg_finish_decompress(cinfo);
  return true;
}

// jpeg_destroy_* is a no-op on an object that jpeg_create_* never initialised (mem == NULL),
// so the guards are safe whichever step failed.
struct CompressGuard {
  jpeg_compress_struct cinfo{};
  ~CompressGuard() { jpeg_destroy_compress(&cinfo); }
};
struct DecompressGuard {
  jpeg_decompress_struct cinfo{};
  ~DecompressGuard() { jpeg_destroy_decompress(&cinfo); }
};

std::runtime_error jpeg_error(const char* step, const ErrorState& err) {
  return std::runtime_error(std::string("libjpeg ") + step + " failed: " +
                            (err.message[0] != '\0' ? err.message : "unexpected output size"));
}

}  // namespace

void jpeg_roundtrip(ImageView image, std::uint8_t* out) {
  detail::require_image(image, "image");
  if (out == nullptr) throw std::invalid_argument("jpeg_roundtrip: out is null");
  const std::size_t row_bytes = static_cast<std::size_t>(image.width) * 3;

  // Reused per thread: the buffers of one camera size stay allocated between queries.
  thread_local std::vector<JOCTET> stream;
  thread_local std::vector<JSAMPROW> rows;
  stream.resize(jpeg_size_bound(image.height, image.width));
  rows.resize(static_cast<std::size_t>(image.height));

  // libjpeg's row type is non-const, but the compressor only reads its input rows.
  auto* input = const_cast<std::uint8_t*>(image.pixels);
  for (std::size_t y = 0; y < rows.size(); ++y) rows[y] = input + y * row_bytes;

  jpeg_destination_mgr sink{};
  sink.next_output_byte = stream.data();
  sink.free_in_buffer = stream.size();
  sink.init_destination = sink_init;
  sink.empty_output_buffer = sink_full;
  sink.term_destination = sink_term;
  std::size_t length = 0;
  {
    ErrorState err;
    init_error_state(err);
    CompressGuard guard;
    guard.cinfo.err = &err.manager;
    length = encode_image(&guard.cinfo, &err, rows.data(), image.height, image.width, &sink,
                          stream.size());
    if (length == 0) throw jpeg_error("encode", err);
  }

  for (std::size_t y = 0; y < rows.size(); ++y) rows[y] = out + y * row_bytes;
  jpeg_source_mgr source{};
  source.next_input_byte = stream.data();
  source.bytes_in_buffer = length;
  source.init_source = source_init;
  source.fill_input_buffer = source_empty;
  source.skip_input_data = source_skip;
  source.resync_to_restart = jpeg_resync_to_restart;
  source.term_source = source_term;
  ErrorState err;
  init_error_state(err);
  DecompressGuard guard;
  guard.cinfo.err = &err.manager;
  if (!decode_image(&guard.cinfo, &err, &source, rows.data(), image.height, image.width))
    throw jpeg_error("decode", err);
}

}  // namespace rdvla
