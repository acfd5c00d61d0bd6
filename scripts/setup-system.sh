#!/usr/bin/env bash
# Installs the system packages the project needs (apt, when run as root), or says exactly what to install.
# --test adds what the test suite needs besides: a Docker engine, debootstrap (for a local base image), Chromium,
# and a C++ compiler with CMake (for the real model's server).
set -euo pipefail

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[[ -d /usr/share/games/fortunes ]] || need+=(fortunes)   # the transformer template's text corpus
if [[ ${1:-} == --test ]]; then
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)   # renders the HTML reports in tests/test_digest.py
    # tests/test_real_model.py: llama-cpp-python compiles llama.cpp from source
    command -v c++ >/dev/null 2>&1 || need+=(build-essential)
    command -v cmake >/dev/null 2>&1 || need+=(cmake)
fi
# LaTeX for the papers: the tools, and the packages the paper template uses.
tex_ok=1
for tool in latexmk pdflatex bibtex chktex kpsewhich; do command -v "$tool" >/dev/null 2>&1 || tex_ok=0; done
if ((tex_ok)); then
    for sty in natbib.sty listings.sty booktabs.sty lmodern.sty hyperref.sty xcolor.sty; do
        [[ -n $(kpsewhich "$sty" 2>/dev/null) ]] || tex_ok=0
    done
fi
((tex_ok)) || need+=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended texlive-latex-extra
                     latexmk chktex lmodern)

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
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
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
