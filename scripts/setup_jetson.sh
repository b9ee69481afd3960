#!/usr/bin/env bash
# Set up a Jetson Orin on JetPack 6 (L4T R36, Ubuntu 22.04, Python 3.10) to build, verify, profile
# and run rdvla bundles with TensorRT and RealSense cameras. See docs/jetson.md.
#
#   bash scripts/setup_jetson.sh          # safe to run again: every step checks before it acts
#
# Steps: system packages; TensorRT's Python bindings from JetPack (apt); .venv at the repository root
# with --system-site-packages (so it sees JetPack's TensorRT); librealsense built from source with the
# RSUSB backend and its Python bindings; the RealSense udev rules; rdvla with its robot and jetson extras
# (cuda-python for the TensorRT backend; no torch, no onnx). Every pip call keeps to
# scripts/jetson-constraints.txt (NumPy below 2 beside JetPack's TensorRT).
#
# Environment:
#   LIBREALSENSE_VERSION  release tag to build (default v2.58.4; recordings are .db3 from 2.58 on, so
#                         keep the desk's pyrealsense2 and the Jetson's on the same side of 2.58)
#   LIBREALSENSE_SRC      where to clone it (default ~/src/librealsense)
#   JOBS                  parallel compile jobs (default: one per 2 GiB of available memory, at least 1)
#   CUDA_HOME             JetPack's CUDA (default /usr/local/cuda)
#
# The functions below are the script's decisions; tests/robot_install/test_setup_jetson.py sources this file
# (nothing runs then) and calls them with fakes, so they are checked without a Jetson.
set -euo pipefail

LIBREALSENSE_URL=https://github.com/realsenseai/librealsense.git
MEMINFO=${MEMINFO:-/proc/meminfo}
SYSTEM_PYTHON=/usr/bin/python3
GIB_KB=$((1024 * 1024))
JOB_KB=$((2 * GIB_KB))     # a librealsense compile job peaks near 2 GiB on aarch64 (CUDA and pybind11 units)
SHORT_MEMORY_KB=$((12 * GIB_KB))  # below this, memory and swap together are short (8 GB boards without swap)

say() { echo "==> $*"; }
warn() { echo "warning: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
have_module() { "$1" -c "import $2" 2>/dev/null; }

# A field of /proc/meminfo in kB (0 when absent).
meminfo_kb() {
  awk -v field="$1:" '$1 == field { print $2; found = 1 } END { if (!found) print 0 }' "$MEMINFO"
}

# Parallel compile jobs that fit in memory: one per JOB_KB of MemAvailable, at least 1, at most the cores.
# (librealsense's own Jetson build script builds with -j2, after adding swap.)
jobs_from_memory() {
  local jobs cores
  jobs=$(($(meminfo_kb MemAvailable) / JOB_KB))
  cores=$(nproc)
  ((jobs > cores)) && jobs=$cores
  ((jobs < 1)) && jobs=1
  echo "$jobs"
}

# Whether memory and swap together are short: on 8 GB boards the librealsense build runs few jobs, and
# `rdvla build` of the full VLM graph needs about 9 GiB at its peak (it says so itself before it starts).
memory_is_short() {
  (($(meminfo_kb MemTotal) + $(meminfo_kb SwapTotal) < SHORT_MEMORY_KB))
}

# Offer a swap file: made after a yes on a terminal, else only described.
offer_swap() {
  local size_gb=$1 file=/swapfile total_gib swap_gib
  total_gib=$(($(meminfo_kb MemTotal) / GIB_KB))
  swap_gib=$(($(meminfo_kb SwapTotal) / GIB_KB))
  say "memory is short (${total_gib} GiB and ${swap_gib} GiB of swap): a ${size_gb} GB swap file lets the librealsense build and \`rdvla build\` finish"
  local answer=n
  if [[ -t 0 && ! -e $file ]]; then
    read -r -p "create ${size_gb} GB of swap at $file now? [y/N] " answer || answer=n
  fi
  if [[ $answer == [yY]* ]]; then
    as_root fallocate -l "${size_gb}G" "$file"
    as_root chmod 600 "$file"
    as_root mkswap "$file"
    as_root swapon "$file"
    say "swap on at $file (add '$file none swap sw 0 0' to /etc/fstab to keep it after a reboot)"
  else
    echo "    to add it yourself: sudo fallocate -l ${size_gb}G $file && sudo chmod 600 $file && sudo mkswap $file && sudo swapon $file" >&2
  fi
}

# "VERSION LOCATION" of a pip-installed pyrealsense2 inside the venv, which would shadow the RSUSB build:
# pip's aarch64 wheel uses the V4L2 backend (docs/jetson.md says why rdvla builds librealsense instead).
venv_pyrealsense2_wheel() {
  local py=$1 venv=$2 shown version location
  shown=$("$py" -m pip show pyrealsense2 2>/dev/null) || return 1
  version=$(sed -n 's/^Version: //p' <<<"$shown")
  location=$(sed -n 's/^Location: //p' <<<"$shown")
  [[ $location == "$venv"/* ]] || return 1
  echo "$version $location"
}

# A variable of a configured CMake build (its CMakeCache.txt), empty when unset.
cmake_cache_value() {
  sed -n "s/^$2:[A-Z]*=//p" "$1/CMakeCache.txt" 2>/dev/null | head -n 1
}

# Where `cmake --install` puts the Python bindings: librealsense sets PYTHON_INSTALL_DIR to
# ${Python_SITEARCH}/pyrealsense2, from FindPython's Python_EXECUTABLE (it does not read PYTHON_EXECUTABLE for
# this; CMake/external_pybind11.cmake at v2.58.2). Printed as the site directory that holds the package.
bindings_site_dir() {
  local dir
  dir=$(cmake_cache_value "$1" PYTHON_INSTALL_DIR)
  [[ -n $dir ]] || return 1
  dirname "$dir"
}

main() {
  cd "$(dirname "$0")/.."
  local repo_root venv py constraints
  repo_root=$(pwd)
  venv=$repo_root/.venv
  py=$venv/bin/python
  constraints=$repo_root/scripts/jetson-constraints.txt
  LIBREALSENSE_VERSION=${LIBREALSENSE_VERSION:-v2.58.4}
  LIBREALSENSE_SRC=${LIBREALSENSE_SRC:-$HOME/src/librealsense}
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  JOBS=${JOBS:-$(jobs_from_memory)}
  pip_install() { "$py" -m pip install -q -c "$constraints" "$@"; }

  # ----- the platform -----------------------------------------------------------------------------
  [[ $(uname -m) == aarch64 ]] || die "this script is for a Jetson (aarch64); on a workstation use scripts/install.sh"
  if [[ -r /etc/nv_tegra_release ]]; then
    local release
    release=$(head -n 1 /etc/nv_tegra_release)
    [[ $release == *"R36"* ]] || warn "expected L4T R36 (JetPack 6), found: $release"
  else
    warn "/etc/nv_tegra_release not found; is this a Jetson with JetPack installed?"
  fi
  [[ -x $CUDA_HOME/bin/nvcc ]] || die "no nvcc in $CUDA_HOME/bin: install JetPack's CUDA (sudo apt-get install nvidia-jetpack) or set CUDA_HOME"

  # ----- system packages --------------------------------------------------------------------------
  local packages=(git cmake build-essential pkg-config python3-dev python3-venv python3-pip
                  libusb-1.0-0-dev libudev-dev libssl-dev libjpeg-turbo8-dev)
  local missing=() package
  for package in "${packages[@]}"; do
    # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not a shell variable
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ! have_module "$SYSTEM_PYTHON" tensorrt; then
    missing+=(python3-libnvinfer)  # TensorRT's Python bindings, from JetPack's apt repository
  fi
  if ((${#missing[@]})); then
    say "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  have_module "$SYSTEM_PYTHON" tensorrt || die "TensorRT's Python bindings are still missing: sudo apt-get install nvidia-tensorrt"

  # ----- the virtual environment ------------------------------------------------------------------
  if [[ ! -x $py ]]; then
    say "creating .venv (with JetPack's system packages visible, for TensorRT)"
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$venv"
  elif grep -q '^include-system-site-packages *= *false' "$venv/pyvenv.cfg"; then
    say "letting .venv see the system packages (JetPack's TensorRT)"
    sed -i 's/^include-system-site-packages *= *false/include-system-site-packages = true/' "$venv/pyvenv.cfg"
  fi
  have_module "$py" tensorrt || die ".venv cannot import JetPack's tensorrt; check $venv/pyvenv.cfg"
  pip_install --upgrade pip
  pip_install numpy  # the constraints hold it below 2, replacing a NumPy 2 already in .venv

  # ----- librealsense with its Python bindings, RSUSB backend (no kernel patches) -----------------
  local wheel
  if wheel=$(venv_pyrealsense2_wheel "$py" "$venv"); then
    say "removing pip's pyrealsense2 ${wheel%% *} from .venv (${wheel#* }): that wheel uses the V4L2 backend and would shadow the RSUSB build made here (an older rdvla's \`pip install .[realsense]\` put it there)"
    "$py" -m pip uninstall -q -y pyrealsense2
  fi
  if ! have_module "$py" pyrealsense2; then
    if [[ ! -d $LIBREALSENSE_SRC/.git ]]; then
      say "cloning librealsense $LIBREALSENSE_VERSION into $LIBREALSENSE_SRC"
      mkdir -p "$(dirname "$LIBREALSENSE_SRC")"
      git clone --depth 1 --branch "$LIBREALSENSE_VERSION" "$LIBREALSENSE_URL" "$LIBREALSENSE_SRC"
    fi
    memory_is_short && offer_swap 8
    say "building librealsense $LIBREALSENSE_VERSION with $JOBS jobs (tens of minutes; JOBS=N to change)"
    # CUDA: librealsense's CMake/cuda_config.cmake (v2.58.x) sets CMAKE_CUDA_ARCHITECTURES itself, to 62..90
    # without 87, so a -DCMAKE_CUDA_ARCHITECTURES would be overridden; the flag below adds Orin's (sm_87) own
    # code, instead of JIT compilation from compute_86 PTX at the first use of each kernel.
    # Python: FindPython's Python_EXECUTABLE decides where the bindings install (bindings_site_dir); the system
    # Python's site directory, which .venv sees through --system-site-packages, as it sees JetPack's TensorRT.
    cmake -S "$LIBREALSENSE_SRC" -B "$LIBREALSENSE_SRC/build" \
      -DCMAKE_BUILD_TYPE=Release \
      -DFORCE_RSUSB_BACKEND=ON \
      -DBUILD_PYTHON_BINDINGS=ON \
      -DPython_EXECUTABLE="$SYSTEM_PYTHON" \
      -DPYTHON_EXECUTABLE="$SYSTEM_PYTHON" \
      -DBUILD_WITH_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" \
      -DCMAKE_CUDA_FLAGS="-gencode=arch=compute_87,code=sm_87" \
      -DBUILD_EXAMPLES=OFF \
      -DBUILD_GRAPHICAL_EXAMPLES=OFF \
      -DBUILD_TOOLS=OFF \
      -DBUILD_UNIT_TESTS=OFF
    cmake --build "$LIBREALSENSE_SRC/build" -j "$JOBS"
    as_root cmake --install "$LIBREALSENSE_SRC/build"
    as_root ldconfig
    if ! have_module "$py" pyrealsense2; then
      local site
      site=$(bindings_site_dir "$LIBREALSENSE_SRC/build") \
        || die "no PYTHON_INSTALL_DIR in $LIBREALSENSE_SRC/build/CMakeCache.txt: was it configured with BUILD_PYTHON_BINDINGS=ON?"
      [[ -d $site/pyrealsense2 ]] || die "pyrealsense2 was built but is not in $site/pyrealsense2; look in $LIBREALSENSE_SRC/build"
      local venv_site
      venv_site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      echo "$site" > "$venv_site/librealsense.pth"
      say "pyrealsense2 installed in $site (added to .venv through $venv_site/librealsense.pth)"
    fi
  fi
  "$py" -c 'import pyrealsense2 as rs; rs.__version__' 2>/dev/null \
    || die "pyrealsense2 imports but has no __version__ (rdvla reads it to pick the recording format); use a release that exports it"
  say "pyrealsense2: $("$py" -c 'import pyrealsense2 as rs; print(rs.__version__, "from", rs.__file__)')"

  local udev_rules=/etc/udev/rules.d/99-realsense-libusb.rules
  if [[ ! -f $udev_rules ]]; then
    [[ -f $LIBREALSENSE_SRC/config/99-realsense-libusb.rules ]] \
      || git clone --depth 1 --branch "$LIBREALSENSE_VERSION" "$LIBREALSENSE_URL" "$LIBREALSENSE_SRC"
    say "installing the RealSense udev rules (cameras usable without root)"
    as_root cp "$LIBREALSENSE_SRC/config/99-realsense-libusb.rules" "$udev_rules"
    as_root udevadm control --reload-rules
    as_root udevadm trigger
  fi

  # ----- rdvla --------------------------------------------------------------------------------------
  # The robot's dependencies are pyproject.toml's `robot` extra (what CI's robot tier installs too) and the
  # `jetson` extra for the TensorRT backend (cuda-python, a wheel).
  say "installing rdvla[robot,jetson] into .venv (no torch, no onnx)"
  # RDVLA_REQUIRE_NATIVE: the robot runs the C++ preprocessing; a failed build must stop here, not fall back.
  RDVLA_REQUIRE_NATIVE=1 pip_install -e "${repo_root}[robot,jetson]"

  say "checking the installation (rdvla doctor: one line per check, with the fix)"
  "$venv/bin/rdvla" doctor || warn "rdvla doctor reports a FAIL above; fix it before rdvla run"
  "$venv/bin/rdvla" --version
  say "done. Next: lock the clocks (sudo nvpmodel -m 0 && sudo jetson_clocks), then rdvla build -> verify -> profile -> run (docs/jetson.md)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
