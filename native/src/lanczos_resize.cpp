// Lanczos3 antialiased resize, as TensorFlow's ScaleAndTranslate kernel computes it
// (tf.image.resize(..., "lanczos3", antialias=True)), in the numpy pipeline's (runtime/preprocess/) float32
// operation order: per-output weights computed in float32 and normalised to sum 1, the
// height pass first, then the width pass, each accumulated in float32 in span order.
//
// Bit-exactness rests on three things: the library is built with -ffp-contract=off (a
// fused multiply-add rounds once where TensorFlow and numpy round twice), the weights call
// the C library's sinf as TensorFlow's kernel does, and each output is summed in span
// order.  The loops vectorise across independent outputs only, never across the terms of
// one sum, so the compiler's vector code keeps that order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "internal.h"

namespace rdvla {
namespace detail {
namespace {

constexpr float kPi = 3.14159265359f;  // TensorFlow's constant, rounded to float
constexpr float kRadius = 3.0f;

// Output o of one axis is the sum over k < count[o] of weights[o * span + k] times source
// sample first[o] + k.  Zero weights past the real span are left out: adding them
// changes no sum.
struct AxisWeights {
  int span = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<float> weights;
};

float lanczos3(float x) {
  x = std::fabs(x);
  if (x > kRadius) return 0.0f;
  if (x <= 1e-3f) return 1.0f;
  const float a = kPi * x;
  const float b = a / kRadius;
  const float den = kPi * kPi * x * x;
  return kRadius * std::sin(a) * std::sin(b) / den;
}

AxisWeights compute_axis(int in_size, int out_size) {
  const float scale = static_cast<float>(out_size) / static_cast<float>(in_size);
  // TensorFlow divides in double (1.0 / scale) and stores the result as float.
  const auto inv_scale = static_cast<float>(1.0 / static_cast<double>(scale));
  const float kernel_scale = std::max(inv_scale, 1.0f);
  const float support = kRadius * kernel_scale;
  const float one_over_kernel_scale = 1.0f / kernel_scale;

  AxisWeights axis;
  axis.span = std::min(2 * static_cast<int>(std::ceil(support)) + 1, in_size);
  axis.first.resize(static_cast<std::size_t>(out_size));
  axis.count.resize(static_cast<std::size_t>(out_size));
  axis.weights.assign(static_cast<std::size_t>(out_size) * axis.span, 0.0f);
  for (int o = 0; o < out_size; ++o) {
    const float sample = (static_cast<float>(o) + 0.5f) * inv_scale;
    const int start = std::clamp(static_cast<int>(std::ceil(sample - support - 0.5f)), 0, in_size - 1);
    const int end = std::clamp(static_cast<int>(std::floor(sample + support - 0.5f)), 0, in_size - 1) + 1;
    const int count = std::min(end - start, axis.span);
    float* w = &axis.weights[static_cast<std::size_t>(o) * axis.span];
    float total = 0.0f;
    for (int k = 0; k < count; ++k) {
      const float pos = (static_cast<float>(start + k) + 0.5f) - sample;
      w[k] = lanczos3(pos * one_over_kernel_scale);
      total += w[k];
    }
    const float inv_total = 1.0f / total;
    for (int k = 0; k < count; ++k) w[k] *= inv_total;
    axis.first[static_cast<std::size_t>(o)] = start;
    axis.count[static_cast<std::size_t>(o)] = count;
  }
  return axis;
}

// Weights per (input size, output size), shared by all threads; entries in use survive an
// eviction through their shared_ptr.
std::shared_ptr<const AxisWeights> axis_weights(int in_size, int out_size) {
  constexpr std::size_t kMaxEntries = 32;
  static std::mutex mutex;
  static std::map<std::pair<int, int>, std::shared_ptr<const AxisWeights>> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::pair<int, int> key{in_size, out_size};
  if (const auto found = cache.find(key); found != cache.end()) return found->second;
  if (cache.size() >= kMaxEntries) cache.clear();
  auto weights = std::make_shared<const AxisWeights>(compute_axis(in_size, out_size));
  cache.emplace(key, weights);
  return weights;
}

// dst[j] = sum_k w[k] * rows[k][j] for k < count, summed in k order.  The first product
// initialises the sum (the same value as 0 + product, up to the sign of a zero, which the
// final uint8 conversion erases).  A block of 32 sums stays in registers across all k
// (8 SSE or NEON vectors): the compiler vectorises the block, which runs across
// independent outputs, and the unroll pragma (GCC and Clang; others ignore it) keeps the
// block out of memory.
void weighted_rows(const float* const* rows, const float* w, int count, std::size_t length,
                   float* dst) {
  constexpr std::size_t kBlock = 32;
  std::size_t j = 0;
  for (; j + kBlock <= length; j += kBlock) {
    float sum[kBlock];
#pragma GCC unroll 32
    for (std::size_t b = 0; b < kBlock; ++b) sum[b] = w[0] * rows[0][j + b];
    for (int k = 1; k < count; ++k) {
      const float* row = rows[k] + j;
      const float wk = w[k];
#pragma GCC unroll 32
      for (std::size_t b = 0; b < kBlock; ++b) sum[b] += wk * row[b];
    }
#pragma GCC unroll 32
    for (std::size_t b = 0; b < kBlock; ++b) dst[j + b] = sum[b];
  }
  for (; j < length; ++j) {
    float sum = w[0] * rows[0][j];
    for (int k = 1; k < count; ++k) sum += w[k] * rows[k][j];
    dst[j] = sum;
  }
}

// tf.round (half to even), clip to [0, 255], cast.  Clipping first gives the same result
// (both bounds are integers) and bounds the value for the rounding: adding 1.5 * 2^23
// leaves no fraction bits, so the hardware's round-to-nearest-even does the rounding in a
// form that vectorises on every target.
std::uint8_t round_to_uint8(float v) {
  constexpr float kMagic = 12582912.0f;
  v = std::min(std::max(v, 0.0f), 255.0f);
  return static_cast<std::uint8_t>((v + kMagic) - kMagic);
}

}  // namespace

void lanczos_resize(ImageView image, int out_height, int out_width, std::uint8_t* out) {
  const auto rows = axis_weights(image.height, out_height);
  const auto cols = axis_weights(image.width, out_width);
  const std::size_t in_row = static_cast<std::size_t>(image.width) * 3;
  const std::size_t column = static_cast<std::size_t>(out_height) * 3;
  const auto ring_rows = static_cast<std::size_t>(rows->span);

  // Source rows are converted to float once, into a ring of `span` rows: the windows of
  // successive output rows only move down.  The height pass writes its result transposed,
  // (in_width, out_height, 3), so that the width pass again combines whole rows.
  thread_local std::vector<float> ring;
  thread_local std::vector<float> line;
  thread_local std::vector<float> transposed;
  thread_local std::vector<const float*> taps;
  thread_local std::vector<std::uint8_t> rounded;
  ring.resize(ring_rows * in_row);
  line.resize(std::max(in_row, column));
  transposed.resize(static_cast<std::size_t>(image.width) * column);
  taps.resize(static_cast<std::size_t>(std::max(rows->span, cols->span)));
  rounded.resize(column);
  float* const line_data = line.data();
  float* const transposed_data = transposed.data();
  std::uint8_t* const rounded_data = rounded.data();

  std::size_t converted = 0;  // source rows [0, converted) have been through the ring
  for (std::size_t y = 0; y < static_cast<std::size_t>(out_height); ++y) {
    const auto first = static_cast<std::size_t>(rows->first[y]);
    const int count = rows->count[y];
    for (; converted < first + static_cast<std::size_t>(count); ++converted) {
      const std::uint8_t* src = image.pixels + converted * in_row;
      float* dst = &ring[(converted % ring_rows) * in_row];
      for (std::size_t j = 0; j < in_row; ++j) dst[j] = static_cast<float>(src[j]);
    }
    for (int k = 0; k < count; ++k)
      taps[static_cast<std::size_t>(k)] = &ring[((first + static_cast<std::size_t>(k)) % ring_rows) * in_row];
    weighted_rows(taps.data(), &rows->weights[y * ring_rows], count, in_row, line_data);
    for (std::size_t x = 0; x < static_cast<std::size_t>(image.width); ++x)
      for (std::size_t c = 0; c < 3; ++c)
        transposed_data[x * column + y * 3 + c] = line_data[x * 3 + c];
  }

  const std::size_t out_row = static_cast<std::size_t>(out_width) * 3;
  const auto col_span = static_cast<std::size_t>(cols->span);
  for (std::size_t x = 0; x < static_cast<std::size_t>(out_width); ++x) {
    const auto first = static_cast<std::size_t>(cols->first[x]);
    const int count = cols->count[x];
    for (int k = 0; k < count; ++k)
      taps[static_cast<std::size_t>(k)] = transposed_data + (first + static_cast<std::size_t>(k)) * column;
    weighted_rows(taps.data(), &cols->weights[x * col_span], count, column, line_data);
    for (std::size_t j = 0; j < column; ++j) rounded_data[j] = round_to_uint8(line_data[j]);
    for (std::size_t y = 0; y < static_cast<std::size_t>(out_height); ++y)
      std::memcpy(out + y * out_row + x * 3, rounded_data + y * 3, 3);
  }
}

}  // namespace detail

void resize_for_policy(ImageView image, int size, bool jpeg, std::uint8_t* out) {
  detail::require_image(image, "image");
  if (size < 1) throw std::invalid_argument("size must be positive, got " + std::to_string(size));
  if (out == nullptr) throw std::invalid_argument("resize_for_policy: out is null");
  if (jpeg) {
    thread_local std::vector<std::uint8_t> decoded;
    decoded.resize(static_cast<std::size_t>(image.height) * image.width * 3);
    jpeg_roundtrip(image, decoded.data());
    image.pixels = decoded.data();
  }
  detail::lanczos_resize(image, size, size, out);
}

}  // namespace rdvla
