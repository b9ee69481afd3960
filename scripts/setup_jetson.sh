#!/usr/bin/env bash
# Set up a Jetson Orin on JetPack 6 (L4T R36, Ubuntu 22.04, Python 3.10) to build, verify, profile
# and run rdvla bundles with TensorRT and RealSense cameras. See docs/jetson.md.
#
#   bash scripts/setup_jetson.sh          # safe to run again: every step checks before it acts
#
# Steps: system packages; TensorRT's Python bindings from JetPack (apt); .venv at the repository root
# with --system-site-packages (so it sees JetPack's TensorRT); librealsense built from source with the
# RSUSB backend and its Python bindings; the RealSense udev rules; rdvla with its robot and jetson extras
# (cuda-python for the TensorRT backend; no torch, no onnx).
#
# Environment:
#   LIBREALSENSE_VERSION  release tag to build (default v2.58.4; recordings are .db3 from 2.58 on, so
#                         keep the desk's pyrealsense2 and the Jetson's on the same side of 2.58)
#   LIBREALSENSE_SRC      where to clone it (default ~/src/librealsense)
#   JOBS                  parallel compile jobs (default: cores - 1; lower it on 8 GB boards)
#   CUDA_HOME             JetPack's CUDA (default /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)

LIBREALSENSE_VERSION=${LIBREALSENSE_VERSION:-v2.58.4}
LIBREALSENSE_SRC=${LIBREALSENSE_SRC:-$HOME/src/librealsense}
LIBREALSENSE_URL=https://github.com/realsenseai/librealsense.git
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
cores=$(nproc)
JOBS=${JOBS:-$((cores > 1 ? cores - 1 : 1))}
venv=$repo_root/.venv
py=$venv/bin/python

say() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
have_module() { "$1" -c "import $2" 2>/dev/null; }

# ----- the platform -------------------------------------------------------------------------------
[[ $(uname -m) == aarch64 ]] || die "this script is for a Jetson (aarch64); on a workstation use scripts/install.sh"
if [[ -r /etc/nv_tegra_release ]]; then
  release=$(head -n 1 /etc/nv_tegra_release)
  [[ $release == *"R36"* ]] || echo "warning: expected L4T R36 (JetPack 6), found: $release" >&2
else
  echo "warning: /etc/nv_tegra_release not found; is this a Jetson with JetPack installed?" >&2
fi
[[ -x $CUDA_HOME/bin/nvcc ]] || die "no nvcc in $CUDA_HOME/bin: install JetPack's CUDA (sudo apt-get install nvidia-jetpack) or set CUDA_HOME"

# ----- system packages ----------------------------------------------------------------------------
packages=(git cmake build-essential pkg-config python3-dev python3-venv python3-pip
          libusb-1.0-0-dev libudev-dev libssl-dev libjpeg-turbo8-dev)
missing=()
for package in "${packages[@]}"; do
  # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not a shell variable
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ! have_module /usr/bin/python3 tensorrt; then
  missing+=(python3-libnvinfer)  # TensorRT's Python bindings, from JetPack's apt repository
fi
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
have_module /usr/bin/python3 tensorrt || die "TensorRT's Python bindings are still missing: sudo apt-get install nvidia-tensorrt"

# ----- the virtual environment --------------------------------------------------------------------
if [[ ! -x $py ]]; then
  say "creating .venv (with JetPack's system packages visible, for TensorRT)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
elif grep -q '^include-system-site-packages *= *false' "$venv/pyvenv.cfg"; then
  say "letting .venv see the system packages (JetPack's TensorRT)"
  sed -i 's/^include-system-site-packages *= *false/include-system-site-packages = true/' "$venv/pyvenv.cfg"
fi
have_module "$py" tensorrt || die ".venv cannot import JetPack's tensorrt; check $venv/pyvenv.cfg"
# A precaution: JetPack 6's Python bindings come from the NumPy 1 era.
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "numpy>=1.24,<2"

# ----- librealsense with its Python bindings, RSUSB backend (no kernel patches) -------------------
if ! have_module "$py" pyrealsense2; then
  if [[ ! -d $LIBREALSENSE_SRC/.git ]]; then
    say "cloning librealsense $LIBREALSENSE_VERSION into $LIBREALSENSE_SRC"
    mkdir -p "$(dirname "$LIBREALSENSE_SRC")"
    git clone --depth 1 --branch "$LIBREALSENSE_VERSION" "$LIBREALSENSE_URL" "$LIBREALSENSE_SRC"
  fi
  say "building librealsense $LIBREALSENSE_VERSION with $JOBS jobs (tens of minutes)"
  cmake -S "$LIBREALSENSE_SRC" -B "$LIBREALSENSE_SRC/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DFORCE_RSUSB_BACKEND=ON \
    -DBUILD_PYTHON_BINDINGS=ON \
    -DPYTHON_EXECUTABLE="$py" \
    -DBUILD_WITH_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" \
    -DBUILD_EXAMPLES=OFF \
    -DBUILD_GRAPHICAL_EXAMPLES=OFF \
    -DBUILD_UNIT_TESTS=OFF
  cmake --build "$LIBREALSENSE_SRC/build" -j "$JOBS"
  as_root cmake --install "$LIBREALSENSE_SRC/build"
  as_root ldconfig
  if ! have_module "$py" pyrealsense2; then
    # The bindings land in a prefix directory that the venv does not search: point it there.
    module=$(find /usr/local -name 'pyrealsense2*.so' -print -quit 2>/dev/null || true)
    [[ -n $module ]] || die "pyrealsense2 was built but not installed; look in $LIBREALSENSE_SRC/build"
    where=$(dirname "$module")
    [[ -f $where/__init__.py ]] && where=$(dirname "$where")  # a package directory: add its parent
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$where" > "$site/librealsense.pth"
    say "pyrealsense2 found in $where (added to .venv through $site/librealsense.pth)"
  fi
fi
"$py" -c 'import pyrealsense2 as rs; rs.__version__' 2>/dev/null \
  || die "pyrealsense2 imports but has no __version__ (rdvla reads it to pick the recording format); use a release that exports it"

udev_rules=/etc/udev/rules.d/99-realsense-libusb.rules
if [[ ! -f $udev_rules ]]; then
  [[ -f $LIBREALSENSE_SRC/config/99-realsense-libusb.rules ]] \
    || git clone --depth 1 --branch "$LIBREALSENSE_VERSION" "$LIBREALSENSE_URL" "$LIBREALSENSE_SRC"
  say "installing the RealSense udev rules (cameras usable without root)"
  as_root cp "$LIBREALSENSE_SRC/config/99-realsense-libusb.rules" "$udev_rules"
  as_root udevadm control --reload-rules
  as_root udevadm trigger
fi

# ----- rdvla ----------------------------------------------------------------------------------------
# The robot's dependencies are pyproject.toml's `robot` extra (what CI's robot tier installs too) and the
# `jetson` extra for the TensorRT backend (cuda-python, a wheel).
say "installing rdvla[robot,jetson] into .venv (no torch, no onnx)"
# RDVLA_REQUIRE_NATIVE: the robot runs the C++ preprocessing; a failed build must stop here, not fall back.
RDVLA_REQUIRE_NATIVE=1 "$py" -m pip install -q -e "${repo_root}[robot,jetson]"

say "checking the installation (rdvla doctor: one line per check, with the fix)"
"$venv/bin/rdvla" doctor || echo "warning: rdvla doctor reports a FAIL above; fix it before rdvla run" >&2
"$venv/bin/rdvla" --version
say "done. Next: lock the clocks (sudo nvpmodel -m 0 && sudo jetson_clocks), then rdvla build -> verify -> profile -> run (docs/jetson.md)"
