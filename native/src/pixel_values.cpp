// The whole pipeline for the cameras of one query, written into the engine's input buffer.
#include <array>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "internal.h"
#include "worker_pool.h"

namespace rdvla {
namespace detail {

void require_image(ImageView image, const char* name) {
  if (image.pixels == nullptr) throw std::invalid_argument(std::string(name) + " has no pixels");
  if (image.height < 2 || image.width < 2)
    throw std::invalid_argument(std::string(name) + " must be at least 2x2 pixels, got " +
                                std::to_string(image.height) + "x" + std::to_string(image.width));
}

}  // namespace detail

namespace {

// The Prismatic processor, x / 255 then (x - mean) / std in float32, has 256 possible
// results per channel: tables[c][v] for the 6 output channels [DINOv2 RGB, SigLIP RGB].
using NormTables = std::array<std::array<float, 256>, 6>;

NormTables norm_tables(const PreprocessConfig& config) {
  NormTables tables{};
  for (std::size_t c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.0f;
      tables[c][v] = (x - config.dino_mean[c]) / config.dino_std[c];
      tables[3 + c][v] = (x - config.siglip_mean[c]) / config.siglip_std[c];
    }
  }
  return tables;
}

// Steps 1-3 for one camera: `out` receives its 6 planes of size x size.
void prepare_image(ImageView image, const PreprocessConfig& config, const NormTables& tables,
                   float* out) {
  const int size = config.image_size;
  const std::size_t plane = static_cast<std::size_t>(size) * size;
  thread_local std::vector<std::uint8_t> resized;
  thread_local std::vector<std::uint8_t> cropped;
  // As the authors' prepare_images_for_vla: an image already size x size skips the resize
  // and its JPEG round trip.
  if (image.height != size || image.width != size) {
    resized.resize(plane * 3);
    resize_for_policy(image, size, true, resized.data());
    image = ImageView{resized.data(), size, size};
  }
  if (config.center_crop) {
    cropped.resize(plane * 3);
    center_crop(image, config.crop_scale, size, cropped.data());
    image = ImageView{cropped.data(), size, size};
  }
  float* const planes[6] = {out,             out + plane,     out + 2 * plane,
                            out + 3 * plane, out + 4 * plane, out + 5 * plane};
  for (std::size_t p = 0; p < plane; ++p) {
    const std::uint8_t* rgb = image.pixels + 3 * p;
    for (std::size_t c = 0; c < 6; ++c) planes[c][p] = tables[c][rgb[c % 3]];
  }
}

}  // namespace

void validate_config(const PreprocessConfig& config) {
  if (config.image_size < 1)
    throw std::invalid_argument("image_size must be positive, got " + std::to_string(config.image_size));
  if (!(config.crop_scale > 0.0 && config.crop_scale <= 1.0))
    throw std::invalid_argument("crop_scale must be in (0, 1], got " + std::to_string(config.crop_scale));
  const auto check = [](const std::array<float, 3>& values, const char* name, bool positive) {
    for (const float v : values)
      if (!std::isfinite(v) || (positive && !(v > 0.0f)))
        throw std::invalid_argument(std::string(name) + (positive ? " must be positive" : " must be finite"));
  };
  check(config.dino_mean, "dino_mean", false);
  check(config.siglip_mean, "siglip_mean", false);
  check(config.dino_std, "dino_std", true);
  check(config.siglip_std, "siglip_std", true);
}

void preprocess_into(const std::vector<ImageView>& images, const PreprocessConfig& config,
                     float* out) {
  validate_config(config);
  if (images.empty()) throw std::invalid_argument("images must contain at least one image");
  if (out == nullptr) throw std::invalid_argument("preprocess_into: out is null");
  for (std::size_t i = 0; i < images.size(); ++i)
    detail::require_image(images[i], ("images[" + std::to_string(i) + "]").c_str());

  const NormTables tables = norm_tables(config);
  const std::size_t stride = 6 * static_cast<std::size_t>(config.image_size) * config.image_size;
  detail::parallel_for(images.size(), [&](std::size_t i) {
    prepare_image(images[i], config, tables, out + i * stride);
  });
}

}  // namespace rdvla
