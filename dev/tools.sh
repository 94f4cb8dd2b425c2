#!/usr/bin/env bash
# What `make test` and `make validate` need beyond Rust, installed the way CI installs it,
# so that the README's commands work on a fresh machine:
#
#   dev/tools.sh apt <command> <Debian package> [path]
#       <command> (or the file [path]) is there; else, as root with apt-get, install the
#       package (Debian's, e.g. chromium: no browser download); else stop at once,
#       naming what is missing and the command that installs it.
#   dev/tools.sh venv <name> <pinned requirement> <binary>
#       target/tools/<name>, a virtualenv of its own holding exactly <requirement> (pip,
#       from PyPI), made or remade when the pin changes; prints nothing when it is there.
#   dev/tools.sh python-venv
#       python3 and its venv module are there (else installed or named, as for apt).
#   dev/tools.sh npm <folder>
#       `npm ci` in <folder> unless its node_modules match its package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

stop() {
  echo "make: $*" >&2
  exit 1
}

# apt-get install <package>, as root, or stop naming the command.
apt_install() {
  local package=$1 what=$2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make: $what is missing; installing Debian's $package (apt-get install $package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$package" >/dev/null
  else
    stop "$what is missing. Install it with: sudo apt-get install $package (Debian/Ubuntu), or your system's package manager"
  fi
}

need_apt() {
  local command=$1 package=$2 path=${3:-}
  if [ -n "$path" ]; then
    [ -x "$path" ] && return 0
  elif command -v "$command" >/dev/null 2>&1; then
    return 0
  fi
  apt_install "$package" "${path:-$command}"
  if [ -n "$path" ]; then
    [ -x "$path" ] || stop "$path is still missing after installing $package"
  else
    command -v "$command" >/dev/null 2>&1 || stop "$command is still missing after installing $package"
  fi
}

# python3 with its venv module (Debian splits venv, with ensurepip, out of python3).
need_python_venv() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3
  python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv "python3's venv module"
}

need_venv() {
  local name=$1 requirement=$2 binary=$3
  local dir="target/tools/$name"
  if [ -x "$dir/bin/$binary" ] && [ "$(cat "$dir/.requirement" 2>/dev/null)" = "$requirement" ]; then
    return 0
  fi
  need_python_venv
  echo "make: installing $requirement into $dir (first run only)" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/pip" install --quiet "$requirement"
  echo "$requirement" >"$dir/.requirement"
}

need_npm() {
  local folder=$1
  command -v npm >/dev/null 2>&1 || stop "npm is missing. Install Node.js 20+ with npm (Debian/Ubuntu: sudo apt-get install nodejs npm)"
  # npm ci writes node_modules/.package-lock.json: the same lock, nothing to do.
  if [ -f "$folder/node_modules/.package-lock.json" ] &&
    [ "$folder/node_modules/.package-lock.json" -nt "$folder/package-lock.json" ]; then
    return 0
  fi
  echo "make: npm ci in $folder (first run only)" >&2
  (cd "$folder" && npm ci --no-audit --no-fund)
}

case "${1:-}" in
  apt) need_apt "$2" "$3" "${4:-}" ;;
  venv) need_venv "$2" "$3" "$4" ;;
  python-venv) need_python_venv ;;
  npm) need_npm "$2" ;;
  *) stop "usage: dev/tools.sh apt <command> <package> [path] | venv <name> <requirement> <binary> | npm <folder>" ;;
esac
