#!/usr/bin/env bash
# Builds Herd's Debian package from the workspace:
#   target/debian/herd_<version>_<arch>.deb
# herd in /usr/sbin, an example /etc/herd/herd.toml (a conffile), the
# systemd unit, the manual page and shell completions generated from the
# CLI. Its dependencies are the shared libraries herd links (DPDK 22.11,
# libbpf, ...), found by dpkg-shlibdeps.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release -p herd
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out=target/debian
stage=$out/herd_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

install -D -m 755 target/release/herd "$stage/usr/sbin/herd"
strip --strip-debug "$stage/usr/sbin/herd"
install -D -m 644 dist/herd.toml "$stage/etc/herd/herd.toml"
install -D -m 644 dist/herd.service "$stage/lib/systemd/system/herd.service"
install -d "$stage/usr/share/man/man8"
target/release/herd manpage | gzip -9n > "$stage/usr/share/man/man8/herd.8.gz"
install -d "$stage/usr/share/bash-completion/completions" \
    "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d"
target/release/herd completions bash > "$stage/usr/share/bash-completion/completions/herd"
target/release/herd completions zsh > "$stage/usr/share/zsh/vendor-completions/_herd"
target/release/herd completions fish > "$stage/usr/share/fish/vendor_completions.d/herd.fish"
install -d "$stage/usr/share/doc/herd"
install -m 644 README.md "$stage/usr/share/doc/herd/README.md"
install -d "$stage/usr/share/doc/herd/docs"
install -m 644 docs/*.md "$stage/usr/share/doc/herd/docs/"
cat > "$stage/usr/share/doc/herd/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: herd

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

# The libraries herd links, as package dependencies.
shlibs=$(mktemp -d)
trap 'rm -rf "$shlibs"' EXIT
mkdir -p "$shlibs/debian"
printf 'Source: herd\n\nPackage: herd\nArchitecture: any\n' > "$shlibs/debian/control"
abs_bin=$(realpath "$stage/usr/sbin/herd")
depends=$(cd "$shlibs" && dpkg-shlibdeps -O -e"$abs_bin" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

# The poll-mode drivers are plugins EAL loads at run time: dpkg-shlibdeps
# cannot see them. The ones `port.driver` names (af_packet, af_xdp) and
# the TAP's are needed; a NIC's own PMD (`pci`) comes with `dpdk`.
abi=$(echo "$depends" | grep -o 'librte-eal[0-9]*' | head -1 | sed 's/librte-eal//')
[ -n "$abi" ] || { echo "package.sh: no DPDK ABI in $depends" >&2; exit 1; }
depends="$depends, librte-net-af-packet$abi, librte-net-af-xdp$abi, librte-net-tap$abi"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: herd
Version: $version
Architecture: $arch
Maintainer: Herd developers <herd@example.invalid>
Section: net
Priority: optional
Installed-Size: $size
Depends: $depends, nftables, iproute2
Recommends: dpdk, librte-net-virtio$abi
Description: farm cluster node: one virtual IP, no load balancer
 Every server of a Herd farm receives all of the virtual IP's traffic; a
 DPDK fastpath on each keeps the clients whose hash falls in its buckets,
 and a membership protocol moves buckets within a fraction of a second
 when a server, its link or its application fails.
CONTROL
echo /etc/herd/herd.toml > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    mkdir -p /var/lib/herd
    chmod 700 /var/lib/herd
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # An upgrade restarts a running node (it withdraws first).
        if [ -n "$2" ]; then systemctl try-restart herd.service || true; fi
    fi
fi
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop herd.service || true
fi
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/herd
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/" >/dev/null
echo "$out/herd_${version}_${arch}.deb"
