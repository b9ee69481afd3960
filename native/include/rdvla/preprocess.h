// Host-side image preprocessing of RD-VLA policies: camera frame -> engine input.
//
// A C++ port of runtime/preprocess/ (the executable specification), equal to it
// bit for bit, which in turn reproduces the authors' TensorFlow pipeline:
//   1. images that are not image_size x image_size: JPEG round trip through libjpeg-turbo
//      with TensorFlow's settings, then Lanczos3 antialiased resize (ScaleAndTranslate),
//      round half to even, clip, uint8;
//   2. centre crop-and-resize (CropAndResize, bilinear) when center_crop is set;
//   3. /255 and the DINOv2 and SigLIP normalisations, 6 channels per image.
//
// Every function throws std::invalid_argument for bad arguments and std::runtime_error
// when libjpeg reports an error.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace rdvla {

// A borrowed C-contiguous height x width x 3 RGB image (row stride 3 * width bytes).
struct ImageView {
  const std::uint8_t* pixels = nullptr;
  int height = 0;
  int width = 0;
};

// The free constants of the pipeline (runtime/preprocess/ PreprocessConfig); they come
// from the bundle manifest, so none has a default here.
struct PreprocessConfig {
  int image_size;
  bool center_crop;
  double crop_scale;  // area fraction in (0, 1]; the box side is sqrt(crop_scale)
  std::array<float, 3> dino_mean;
  std::array<float, 3> dino_std;
  std::array<float, 3> siglip_mean;
  std::array<float, 3> siglip_std;
};

// Throws std::invalid_argument unless every field is usable: image_size >= 1, crop_scale in
// (0, 1], finite means, positive finite standard deviations.
void validate_config(const PreprocessConfig& config);

// tf.io.decode_image(tf.image.encode_jpeg(image)) with TensorFlow's defaults.
// `out` receives height x width x 3 bytes.
void jpeg_roundtrip(ImageView image, std::uint8_t* out);

// tf.image.resize(image, (size, size), "lanczos3", antialias=True), rounded half to even,
// clipped to [0, 255]; `jpeg` runs the JPEG round trip first (resize_image_for_policy).
// `out` receives size x size x 3 bytes.
void resize_for_policy(ImageView image, int size, bool jpeg, std::uint8_t* out);

// tf.image.crop_and_resize of the centred box of side sqrt(crop_scale) to size x size
// (bilinear), between convert_image_dtype to float32 and back.  `out` receives
// size x size x 3 bytes.
void center_crop(ImageView image, double crop_scale, int size, std::uint8_t* out);

// The whole pipeline for the cameras of one query, processed in parallel, written
// straight into `out`: C-contiguous float32 (1, 6 * images.size(), S, S) with
// S = config.image_size, channels [DINOv2 RGB, SigLIP RGB] per image in camera order.
void preprocess_into(const std::vector<ImageView>& images, const PreprocessConfig& config,
                     float* out);

}  // namespace rdvla
