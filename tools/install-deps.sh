#!/bin/sh
# Installs the Debian packages asa-serve needs to build, run and test.
# Usage: tools/install-deps.sh   (as root, or with sudo available)
set -eu
PKGS="build-essential cmake ninja-build pkg-config git curl ca-certificates
  libjansson-dev libopenblas-dev libcmocka-dev libpcre2-dev libuv1-dev
  libmicrohttpd-dev libsystemd-dev python3 python3-numpy nodejs npm"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $PKGS
