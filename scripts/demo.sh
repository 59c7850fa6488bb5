#!/usr/bin/env bash
# Installs what is missing, builds, and runs the flagship tutorial.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages
graft_build default
cd "$GRAFT_ROOT"
demo=build/default/examples/05_transfer_fashion_mnist
"$demo" "$@"
