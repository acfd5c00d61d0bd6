#!/usr/bin/env bash
# Installs the system packages the project needs (apt, when run as root), or says exactly what to install.
set -euo pipefail

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)

py_ok=$(python3 -c 'import sys; print(int(sys.version_info >= (3, 11)))' 2>/dev/null || echo 0)
if [[ "$py_ok" != 1 ]]; then
    echo "error: Python 3.11 or newer is needed as python3 (found: $(python3 --version 2>&1 || echo none))" >&2
    exit 1
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if ((${#need[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing system packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "error: missing system packages; install them with: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
fi

# bubblewrap needs unprivileged user namespaces (or root); say so plainly when they are off.
if ! bwrap --unshare-all --ro-bind / / true 2>/dev/null; then
    echo "warning: bubblewrap is installed but cannot create namespaces here;" \
         "enable user namespaces (sysctl kernel.unprivileged_userns_clone=1) or use --sandbox process" >&2
fi
