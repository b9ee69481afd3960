"""Camera-image preprocessing for RD-VLA policies (spec section 1.2): the numpy specification, and
`native`, which picks the bit-exact C++ port (rdvla._native) where it is built.

The authors evaluate (and train) with a TensorFlow pipeline; the robot has no
TensorFlow, so this package re-implements that pipeline step by step in numpy:

1. `resize_for_policy` -- ``tf.image.encode_jpeg`` (quality 95, 4:2:0,
   integer "slow" forward DCT) followed by ``tf.io.decode_image`` (TensorFlow's
   default *INTEGER_FAST* inverse DCT with fancy chroma upsampling), then
   ``tf.image.resize(224x224, "lanczos3", antialias=True)``, round half to even,
   clip to [0, 255], cast to uint8.
2. `center_crop` -- ``convert_image_dtype`` to float32,
   ``tf.image.crop_and_resize`` with the centred box of side sqrt(0.9) to 224x224
   (bilinear), clip to [0, 1], ``convert_image_dtype(uint8, saturate=True)``.
3. `to_pixel_values` -- the Prismatic processor: /255, then per-channel
   (x - mean) / std for DINOv2 (bf16-rounded ImageNet constants) and SigLIP
   (0.5 / 0.5); 6 channels per image, images stacked on the channel axis.

Each step's module says how it reproduces TensorFlow: `jpeg` (the JPEG round trip), `lanczos`
(the resize), `crop` (the centre crop); `pipeline` composes them and normalises; `config` holds
the constants the bundle records.

The measured agreement with TensorFlow is asserted by
``tests/runtime/preprocess/test_preprocess.py`` against fixtures written by
``scripts/make_preprocess_fixtures.py``.

The pipeline here is numpy (the C++ port lives in native/); no TensorFlow, OpenCV or torch is
needed on the robot.  The model casts ``pixel_values`` to bf16 before the vision backbones;
this package returns float32 and leaves that cast to the backend.
"""

from rdvla.runtime.preprocess.config import DEFAULT_CONFIG, PreprocessConfig, validate_image
from rdvla.runtime.preprocess.crop import center_crop
from rdvla.runtime.preprocess.jpeg import jpeg_roundtrip
from rdvla.runtime.preprocess.pipeline import prepare_image, resize_for_policy, to_pixel_values

__all__ = [
    "DEFAULT_CONFIG",
    "PreprocessConfig",
    "center_crop",
    "jpeg_roundtrip",
    "prepare_image",
    "resize_for_policy",
    "to_pixel_values",
    "validate_image",
]
