// Declarations shared by the translation units of the preprocessing library.
#pragma once

#include <cstdint>

#include "rdvla/preprocess.h"

namespace rdvla::detail {

// Throws std::invalid_argument unless `image` points at an image of at least 2x2 pixels
// (the smallest runtime/preprocess/ accepts).
void require_image(ImageView image, const char* name);

// Lanczos3 antialiased resize of `image` to out_height x out_width, rounded to uint8.
void lanczos_resize(ImageView image, int out_height, int out_width, std::uint8_t* out);

}  // namespace rdvla::detail
