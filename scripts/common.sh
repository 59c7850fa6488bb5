# Shared by scripts/test.sh and scripts/demo.sh: installs the Debian packages graft needs
# (only those missing), then configures and builds with the given CMake preset.
set -euo pipefail
GRAFT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

GRAFT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev librange-v3-dev libfmt-dev catch2 libbenchmark-dev nlohmann-json3-dev
  libcli11-dev zlib1g-dev libre2-dev libgloo-dev
  python3-torch python3-torchvision dataset-fashion-mnist
)

graft_install_packages() {
  local missing=()
  for p in "${GRAFT_PACKAGES[@]}"; do
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

graft_build() {
  local preset=$1; shift
  cd "$GRAFT_ROOT"
  cmake --preset "$preset" "$@"
  cmake --build --preset "$preset"
}
