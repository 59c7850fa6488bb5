# Shared by graft's scripts: installs what is missing (Debian packages, and the Python
# environments the tests use as oracles), then configures and builds a CMake preset.
set -euo pipefail
GRAFT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# What building graft and its tutorials needs.
GRAFT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev librange-v3-dev libfmt-dev zlib1g-dev libre2-dev libcli11-dev
  dataset-fashion-mnist
)
# What the tests need besides: Catch2, graft-ckpt's CLI11 and nlohmann-json, c10d's Gloo,
# Python with torch and torchvision as oracles (plus venv, for the environments below), and
# clang 16, which builds graft a second way (tests/clang), and gnuplot, which draws tutorial 12's
# curve.
GRAFT_TEST_PACKAGES=(
  catch2 libcli11-dev nlohmann-json3-dev libgloo-dev python3-torch python3-torchvision python3-venv
  clang-16
  gnuplot-nox
)

graft_install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "graft: all required Debian packages are installed"
    return
  fi
  echo "graft: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Python environments under build/venv (made once, kept across builds):
#   vision: Debian's Python with its torch 1.13 and torchvision 0.14, plus timm and safetensors;
#   torch2: PyTorch 2.13.0 (its libtorch is what the torch2 preset builds against), safetensors,
#           and peft 0.21 (the oracle of the LoRA tests of both presets).
# Pinned versions only: an unpinned torch would fetch a multi-GB CUDA build.
GRAFT_VENV="$GRAFT_ROOT/build/venv"
graft_python_env() {
  local name=$1 py=/usr/bin/python3
  local env="$GRAFT_VENV/$name" flags=() packages=()
  case "$name" in
    vision) flags=(--system-site-packages); packages=(--no-deps timm==1.0.31 safetensors==0.8.0) ;;
    torch2) packages=(torch==2.13.0 safetensors==0.8.0 numpy peft==0.21.0) ;;
  esac
  # The marker records what was installed: an environment made for another list is made again.
  [ -x "$env/bin/python" ] && [ "$(cat "$env/.graft-ready" 2>/dev/null)" = "${packages[*]}" ] && return
  echo "graft: making the Python environment $env"
  rm -rf "$env"
  "$py" -m venv "${flags[@]}" "$env"
  "$env/bin/pip" install -q "${packages[@]}"
  echo "${packages[*]}" > "$env/.graft-ready"
}

graft_build() {
  local preset=$1; shift
  cd "$GRAFT_ROOT"
  cmake --preset "$preset" "$@"
  cmake --build --preset "$preset"
}
