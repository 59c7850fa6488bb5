#!/usr/bin/env bash
# Installs what is missing, builds only the flagship tutorial and runs it: transfer learning on
# Fashion-MNIST (docs/tutorials/05_transfer_fashion_mnist.md). Arguments go to the tutorial.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages "${GRAFT_PACKAGES[@]}"
cd "$GRAFT_ROOT"
cmake --preset demo >/dev/null
cmake --build --preset demo --target 05_transfer_fashion_mnist
build/demo/examples/05_transfer_fashion_mnist "$@"
