// Centre crop-and-resize as TensorFlow's CropAndResize (bilinear) computes it, between
// convert_image_dtype(uint8 -> float32: x * float(1/255)) and
// convert_image_dtype(float32 -> uint8, saturate: trunc(clip(x * 255.5))), in
// the numpy pipeline's (runtime/preprocess/) float32 operation order (see the -ffp-contract=off note in
// lanczos_resize.cpp).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "internal.h"

namespace rdvla {
namespace {

// Source sample i of one axis: low[i] and high[i] = low[i] or low[i] + 1, mixed by lerp[i].
struct CropAxis {
  std::vector<int> low;
  std::vector<int> high;
  std::vector<float> lerp;
};

CropAxis crop_axis(int in_size, int out_size, float crop_scale) {
  const float side = std::min(std::max(std::sqrt(crop_scale), 0.0f), 1.0f);
  const float lo = (1.0f - side) / 2.0f;
  const float hi = lo + side;
  const auto last = static_cast<float>(in_size - 1);
  CropAxis axis;
  for (int i = 0; i < out_size; ++i) {
    float pos = 0.0f;
    if (out_size > 1) {
      const float step = (hi - lo) * last / static_cast<float>(out_size - 1);
      pos = lo * last + static_cast<float>(i) * step;
    } else {  // TensorFlow computes the single sample in double
      pos = static_cast<float>(0.5 * static_cast<double>(lo + hi) * (in_size - 1));
    }
    // Rounding could only push a sample past the edge for a box larger than the image,
    // which crop_scale <= 1 excludes; the check keeps the reads in bounds regardless.
    if (pos < 0.0f || pos > last) throw std::invalid_argument("crop box extends outside the image");
    const float low = std::floor(pos);
    axis.low.push_back(static_cast<int>(low));
    axis.high.push_back(static_cast<int>(std::ceil(pos)));
    axis.lerp.push_back(pos - low);
  }
  return axis;
}

}  // namespace

void center_crop(ImageView image, double crop_scale, int size, std::uint8_t* out) {
  detail::require_image(image, "image");
  if (!(crop_scale > 0.0 && crop_scale <= 1.0))
    throw std::invalid_argument("crop_scale must be in (0, 1], got " + std::to_string(crop_scale));
  if (size < 1) throw std::invalid_argument("size must be positive, got " + std::to_string(size));
  if (out == nullptr) throw std::invalid_argument("center_crop: out is null");

  const CropAxis ys = crop_axis(image.height, size, static_cast<float>(crop_scale));
  const CropAxis xs = crop_axis(image.width, size, static_cast<float>(crop_scale));
  const std::size_t in_row = static_cast<std::size_t>(image.width) * 3;
  const std::size_t row = static_cast<std::size_t>(size) * 3;

  float to_float[256];
  const auto inv255 = static_cast<float>(1.0 / 255.0);
  for (int v = 0; v < 256; ++v) to_float[v] = static_cast<float>(v) * inv255;

  // The horizontal interpolation of a source row does not depend on the output row, so it
  // is done once for each source row in the range the box touches ...
  const int first_row = ys.low.front();
  const int rows = ys.high.back() - first_row + 1;
  thread_local std::vector<float> horizontal;
  horizontal.resize(static_cast<std::size_t>(rows) * row);
  for (int r = 0; r < rows; ++r) {
    const std::uint8_t* src = image.pixels + static_cast<std::size_t>(first_row + r) * in_row;
    float* dst = &horizontal[static_cast<std::size_t>(r) * row];
    for (int x = 0; x < size; ++x) {
      const std::uint8_t* left = src + static_cast<std::size_t>(xs.low[x]) * 3;
      const std::uint8_t* right = src + static_cast<std::size_t>(xs.high[x]) * 3;
      for (int c = 0; c < 3; ++c) {
        const float l = to_float[left[c]];
        dst[x * 3 + c] = l + (to_float[right[c]] - l) * xs.lerp[x];
      }
    }
  }
  // ... and the vertical interpolation combines two of those rows per output row.
  for (int y = 0; y < size; ++y) {
    const float* top = &horizontal[static_cast<std::size_t>(ys.low[y] - first_row) * row];
    const float* bottom = &horizontal[static_cast<std::size_t>(ys.high[y] - first_row) * row];
    const float ly = ys.lerp[y];
    std::uint8_t* dst = out + static_cast<std::size_t>(y) * row;
    for (std::size_t j = 0; j < row; ++j) {
      const float v = std::min(std::max(top[j] + (bottom[j] - top[j]) * ly, 0.0f), 1.0f);
      dst[j] = static_cast<std::uint8_t>(std::min(std::max(v * 255.5f, 0.0f), 255.0f));
    }
  }
}

}  // namespace rdvla
