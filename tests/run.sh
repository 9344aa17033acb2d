#!/usr/bin/env bash
# Installs what the tests need (Debian packages and Python packages) and runs every
# test: lint, types, unit and integration. Used as is by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
command -v swaks >/dev/null || need_pkgs+=(swaks)
command -v smtp-sink >/dev/null || need_pkgs+=(postfix)
# The webmail's browser tests drive Debian's Chromium (Playwright cannot download one here).
command -v chromium >/dev/null || need_pkgs+=(chromium)
# Real IMAP clients for the IMAP tests: mbsync (isync) and mutt, driven in tmux.
command -v mbsync >/dev/null || need_pkgs+=(isync)
command -v mutt >/dev/null || need_pkgs+=(mutt)
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v offlineimap >/dev/null || need_pkgs+=(offlineimap3)
# POP3 clients: fetchmail and getmail6.
command -v fetchmail >/dev/null || need_pkgs+=(fetchmail)
command -v getmail >/dev/null || need_pkgs+=(getmail6)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need_pkgs[*]}"
    # Postfix as a tool and a test peer only: no system configuration, nothing on port 25.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

python3 -m pip install -q -e ".[test]"

echo "== ruff"; python3 -m ruff check mailhouse tests benchmarks
echo "== mypy"; python3 -m mypy
echo "== pytest"; python3 -m pytest -q -p no:cacheprovider "$@"
