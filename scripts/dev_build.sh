#!/usr/bin/env bash
# Rebuild pyattn._C in place (for kernel work in a source checkout). Serialised with a
# lock so that several shells never build into the same build/ folder at once.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/pyattn_build.lock python setup.py -q build_ext --inplace "$@"
