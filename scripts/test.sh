#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test with ctest.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages
graft_build default
cd "$GRAFT_ROOT"
ctest --preset default "$@"
