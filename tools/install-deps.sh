#!/bin/sh
# Installs the Debian packages asa-serve needs to build, run and test.
# Usage: tools/install-deps.sh   (as root, or with sudo available)
# python3-torch (CPU) runs the test that the training code computes the
# reference's function; numpy runs the reference implementation itself.
set -eu
PKGS="build-essential cmake ninja-build pkg-config git curl ca-certificates
  libjansson-dev libopenblas-dev libcmocka-dev libpcre2-dev libuv1-dev
  libmicrohttpd-dev libsystemd-dev libutf8proc-dev python3 python3-numpy python3-torch"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $PKGS
# Node.js and npm run the OpenAI SDK tests; keep an existing installation
# (e.g. a newer Node.js from another repository that bundles npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y --no-install-recommends nodejs npm
fi
