#!/usr/bin/env bash
# Installs the Debian packages attestboot's tests and demo need, only those missing.
# cloud-init is installed with /etc/cloud/cloud-init.disabled in place first, so it never acts on
# this machine; the tests run it inside an overlay root of their own.
set -euo pipefail

packages=(postgresql swtpm swtpm-tools tpm2-tools wireguard-go wireguard-tools iproute2 docker-compose cloud-init
	util-linux procps coreutils systemd openssh-client curl)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all Debian packages present"
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	sudo="sudo"
fi
echo "deps: installing ${missing[*]}"
$sudo mkdir -p /etc/cloud
$sudo touch /etc/cloud/cloud-init.disabled
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The postgresql package starts a cluster of its own; the tests never use it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postgresql 2>/dev/null; then
	$sudo systemctl stop postgresql || true
fi
echo "deps: done"
