#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it (idempotent).
#   scripts/install.sh            runtime + export side and the LIBERO simulator (what the demo needs)
#   scripts/install.sh --dev      ... plus test and type-check tools
# System packages, via apt-get when missing: libusb (pyrealsense2 loads it at import); a C++ compiler,
# CMake, the Python headers and libjpeg-turbo's headers (the native extension, built by pip from
# CMakeLists.txt: Debian names the package libjpeg62-turbo-dev, Ubuntu and JetPack libjpeg-turbo8-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="export,robot,realsense,libero"
[[ "${1:-}" == "--dev" ]] && extras="export,robot,realsense,libero,dev"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  echo "==> installing system packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v g++ >/dev/null || missing+=(g++)
command -v cmake >/dev/null || missing+=(cmake)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
if [[ ! -e /usr/include/jpeglib.h ]]; then
  # shellcheck disable=SC1091  # the system's own file
  if [[ $(. /etc/os-release && echo "$ID") == ubuntu ]]; then missing+=(libjpeg-turbo8-dev); else missing+=(libjpeg62-turbo-dev); fi
fi
if [[ "$extras" == *libero* ]]; then
  # The simulator renders off-screen through Mesa's EGL (llvmpipe where there is no GPU): devices/libero/gl.py.
  ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=(libegl1)
  ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0' || missing+=(libegl-mesa0)
  compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null || missing+=(libgl1-mesa-dri)
fi
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
py=.venv/bin/python
# torch first and pinned: the CPU build of 2.13.0 is what every range below is satisfied by.
if ! $py -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "==> installing torch 2.13.0"
  $py -m pip install -q torch==2.13.0
fi
echo "==> installing rdvla[$extras]"
$py -m pip install -q -e ".[$extras]"
if [[ "$extras" == *dev* ]]; then
  # Type stubs only; its declared dependency is the TensorRT wheel itself, which is not installable here.
  $py -m pip install -q --no-deps "tensorrt-stubs>=10.0,<11"
fi
