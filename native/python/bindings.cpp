// Python binding of the host preprocessing: the module rdvla._native.
//
// Arrays arrive unconstrained and are checked here, so that a wrong argument raises a
// ValueError that names it (as runtime/preprocess/ does) rather than nanobind's generic
// TypeError; nothing is ever copied or converted.  Values the core checks itself are left
// to it (its std::invalid_argument arrives as ValueError too), except where this file uses
// a value first.  The GIL is released around the work.
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>

#include "rdvla/preprocess.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using ReadOnlyArray = nb::ndarray<nb::ro>;
using WritableArray = nb::ndarray<>;

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::string dtype_name(nb::dlpack::dtype dtype) {
  static const char* const kinds[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  const std::string kind = dtype.code < 7 ? kinds[dtype.code] : "unknown";
  return kind + std::to_string(dtype.bits);
}

template <typename Array>
std::string shape_text(const Array& array) {
  std::string text = "(";
  for (std::size_t i = 0; i < array.ndim(); ++i)
    text += (i ? ", " : "") + std::to_string(array.shape(i));
  return text + (array.ndim() == 1 ? ",)" : ")");
}

// True if the strides (in elements) are those of a C-contiguous array of this shape, or the
// array is empty: numpy gives empty arrays zero strides and calls them contiguous, and the
// core, not a stride, should say what is wrong with an empty image.
template <typename Array>
bool c_contiguous(const Array& array) {
  if (array.size() == 0) return true;
  std::int64_t expected = 1;
  for (std::size_t i = array.ndim(); i-- > 0;) {
    if (array.shape(i) != 1 && array.stride(i) != expected) return false;
    expected *= static_cast<std::int64_t>(array.shape(i));
  }
  return true;
}

rdvla::ImageView image_view(nb::handle object, const std::string& name, ReadOnlyArray& array) {
  if (!nb::try_cast(object, array, false))
    fail(name + " must be a numpy.ndarray (H, W, 3) uint8 RGB, got " +
         nb::type_name(object.type()).c_str());
  if (array.device_type() != nb::device::cpu::value) fail(name + " must be in host memory");
  if (array.dtype() != nb::dtype<std::uint8_t>())
    fail(name + " must have dtype uint8 (0..255 RGB), got " + dtype_name(array.dtype()));
  if (array.ndim() != 3) fail(name + " must have shape (H, W, 3), got " + shape_text(array));
  if (array.shape(2) != 3)
    fail(name + " must have 3 (RGB) channels last, got shape " + shape_text(array));
  if (array.shape(0) > 65500 || array.shape(1) > 65500)  // libjpeg's largest dimension
    fail(name + " must be at most 65500x65500 pixels, got " + shape_text(array));
  if (!c_contiguous(array))
    fail(name + " must be C-contiguous (use numpy.ascontiguousarray), got a strided view");
  return {static_cast<const std::uint8_t*>(array.data()), static_cast<int>(array.shape(0)),
          static_cast<int>(array.shape(1))};
}

// A new uint8 (height, width, 3) numpy array and its first byte.
std::pair<nb::object, std::uint8_t*> new_image(int height, int width) {
  nb::object array =
      nb::module_::import_("numpy").attr("empty")(nb::make_tuple(height, width, 3), "uint8");
  auto* data = static_cast<std::uint8_t*>(nb::cast<WritableArray>(array).data());
  return {array, data};
}

std::array<float, 3> to_float(const std::array<double, 3>& values) {
  return {static_cast<float>(values[0]), static_cast<float>(values[1]),
          static_cast<float>(values[2])};
}

void preprocess_into(nb::handle images, nb::handle out, int image_size, bool center_crop,
                     double crop_scale, const std::array<double, 3>& dino_mean,
                     const std::array<double, 3>& dino_std,
                     const std::array<double, 3>& siglip_mean,
                     const std::array<double, 3>& siglip_std) {
  const rdvla::PreprocessConfig config{image_size,          center_crop,       crop_scale,
                                       to_float(dino_mean), to_float(dino_std),
                                       to_float(siglip_mean), to_float(siglip_std)};
  // Before out's expected shape is derived from image_size, so that a bad image_size is
  // reported as such; the core validates the config again.
  rdvla::validate_config(config);

  if (ReadOnlyArray probe; nb::try_cast(images, probe, false))
    fail("images must be a sequence of (H, W, 3) uint8 arrays (one per camera), not a single "
         "array; wrap a single image in a list");
  if (!nb::isinstance<nb::sequence>(images))
    fail(std::string("images must be a sequence of (H, W, 3) uint8 arrays (one per camera), got ") +
         nb::type_name(images.type()).c_str());
  const auto sequence = nb::borrow<nb::sequence>(images);
  const std::size_t count = nb::len(sequence);
  std::vector<ReadOnlyArray> arrays(count);
  std::vector<rdvla::ImageView> views(count);
  for (std::size_t i = 0; i < count; ++i)
    views[i] = image_view(sequence[i], "images[" + std::to_string(i) + "]", arrays[i]);

  WritableArray target;
  if (!nb::try_cast(out, target, false)) {
    if (ReadOnlyArray read_only; nb::try_cast(out, read_only, false)) fail("out must be writable");
    fail(std::string("out must be a numpy.ndarray of float32, got ") +
         nb::type_name(out.type()).c_str());
  }
  const auto size = static_cast<std::size_t>(image_size);
  const std::string expected = "(1, " + std::to_string(6 * count) + ", " +
                               std::to_string(size) + ", " + std::to_string(size) + ")";
  if (target.device_type() != nb::device::cpu::value) fail("out must be in host memory");
  if (target.dtype() != nb::dtype<float>())
    fail("out must have dtype float32, got " + dtype_name(target.dtype()));
  if (shape_text(target) != expected)
    fail("out must have shape " + expected + " for " + std::to_string(count) +
         " image(s) of image_size " + std::to_string(size) + ", got " + shape_text(target));
  if (!c_contiguous(target)) fail("out must be C-contiguous");

  auto* data = static_cast<float*>(target.data());
  const nb::gil_scoped_release release;
  rdvla::preprocess_into(views, config, data);
}

nb::object jpeg_roundtrip(nb::handle image) {
  ReadOnlyArray array;
  const rdvla::ImageView view = image_view(image, "image", array);
  auto [result, data] = new_image(view.height, view.width);
  {
    const nb::gil_scoped_release release;
    rdvla::jpeg_roundtrip(view, data);
  }
  return result;
}

nb::object resize_for_policy(nb::handle image, int size, bool jpeg) {
  ReadOnlyArray array;
  const rdvla::ImageView view = image_view(image, "image", array);
  if (size < 1) fail("size must be positive, got " + std::to_string(size));  // numpy allocates first
  auto [result, data] = new_image(size, size);
  {
    const nb::gil_scoped_release release;
    rdvla::resize_for_policy(view, size, jpeg, data);
  }
  return result;
}

nb::object center_crop(nb::handle image, double crop_scale, int size) {
  ReadOnlyArray array;
  const rdvla::ImageView view = image_view(image, "image", array);
  if (size < 1) fail("size must be positive, got " + std::to_string(size));  // numpy allocates first
  auto [result, data] = new_image(size, size);
  {
    const nb::gil_scoped_release release;
    rdvla::center_crop(view, crop_scale, size, data);
  }
  return result;
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() =
      "Native host preprocessing of RD-VLA (bit-exact port of runtime/preprocess/, "
      "libjpeg-turbo inside).";
  m.def("preprocess_into", &preprocess_into, "images"_a, "out"_a, nb::kw_only(), "image_size"_a,
        "center_crop"_a, "crop_scale"_a, "dino_mean"_a, "dino_std"_a, "siglip_mean"_a,
        "siglip_std"_a,
        "Run the whole pipeline (as runtime.preprocess.to_pixel_values) for the camera "
        "images, in parallel, writing\ninto ``out``: C-contiguous float32 of shape "
        "(1, 6 * len(images), image_size, image_size).");
  m.def("jpeg_roundtrip", &jpeg_roundtrip, "image"_a,
        "tf.io.decode_image(tf.image.encode_jpeg(image)) through libjpeg-turbo; a new uint8 "
        "array.");
  m.def("resize_for_policy", &resize_for_policy, "image"_a, "size"_a, nb::kw_only(),
        "jpeg"_a = true,
        "JPEG round trip (unless jpeg=False), then Lanczos3 antialiased resize to size x "
        "size; a new uint8 array.");
  m.def("center_crop", &center_crop, "image"_a, "crop_scale"_a, "size"_a,
        "Centre crop of relative area crop_scale resized bilinearly to size x size; a new "
        "uint8 array.");
}
