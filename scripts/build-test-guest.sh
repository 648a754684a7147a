#!/usr/bin/env bash
# Builds corral's tiny Linux test guest for the qemu driver, from Debian packages only:
#   - Debian's cloud kernel (only its virtio modules are used, loaded with insmod),
#   - busybox-static (init, shell, httpd, acpid, ip...),
#   - Debian's qemu-guest-agent with the shared libraries it links, taken from their packages.
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`; nothing is installed
# on this machine and nothing is fetched from anywhere but the configured Debian archive.
#
# The guest boots in a few seconds even under TCG, runs qemu-ga on the virtio-serial port
# org.qemu.guest_agent.0, serves HTTP on port 80 (with /cgi-bin/zeros?MIB for large downloads), a
# websocket echo on port 8081, an SSH-like banner-then-echo service on port 22 (both busybox nc
# with small shell scripts, for the proxy tests), and powers off on the ACPI power button.
#
# Output: an image folder with image.json, vmlinuz, initrd.img and base.qcow2 (a small disk whose
# first bytes are "corral-test-guest-base", so linked clones have a real backing file).
#
# Usage: scripts/build-test-guest.sh [output-dir]
#   output-dir defaults to $CORRAL_TEST_GUEST_DIR, else <repo>/.cache/test-guest
# The build is cached: the inputs (this script and the exact package versions) are hashed, and if
# the output already holds a build of that hash the script says so and does nothing.
# Needs: apt-get, apt-cache, dpkg-deb, cpio, gzip, qemu-img, sha256sum (an amd64 Debian host).
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo_dir="$(cd "$(dirname "$script_path")/.." && pwd)"
out_dir="${1:-${CORRAL_TEST_GUEST_DIR:-$repo_dir/.cache/test-guest}}"

log () { printf '[test-guest] %s\n' "$*" >&2; }
die () { printf '[test-guest] error: %s\n' "$*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb cpio gzip qemu-img sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing; install the Debian packages listed in scripts/ci-apt-packages.txt"
done
[ "$(dpkg --print-architecture)" = amd64 ] || die "the test guest is x86_64 and is assembled from amd64 packages; run this on an amd64 Debian host"

# The kernel: whatever linux-image-cloud-amd64 currently points at.
kernel_pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
[ -n "$kernel_pkg" ] || die "apt-cache knows no linux-image-cloud-amd64; run 'apt-get update' (the Debian main archive must be configured)"

# qemu-ga and exactly the libraries its binary links (checked below with the guest's own loader).
packages=("$kernel_pkg" busybox-static qemu-guest-agent libc6 libglib2.0-0 libpcre2-8-0 libudev1 libnuma1 liburing2)

# One apt-cache call (each call costs about half a second): the candidate version of every package.
mapfile -t pinned < <(apt-cache show --no-all-versions "${packages[@]}" 2>/dev/null \
  | awk '/^Package:/ { name = $2 } /^Version:/ { print name "=" $2 }')
[ "${#pinned[@]}" = "${#packages[@]}" ] \
  || die "apt-cache knows only ${pinned[*]:-nothing} of ${packages[*]}; run 'apt-get update'"

input_hash="$( { sha256sum < "$script_path"; printf '%s\n' "${pinned[@]}"; } | sha256sum | cut -d' ' -f1)"

# Test files running in parallel may all call this script: one builds, the others wait and find it cached.
mkdir -p "$(dirname "$out_dir")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$out_dir.lock"
  flock -w 900 9 || die "another build of $out_dir held its lock for 15 minutes; remove $out_dir.lock if no build is running"
fi

if [ -f "$out_dir/.build-hash" ] && [ "$(cat "$out_dir/.build-hash")" = "$input_hash" ] \
  && [ -f "$out_dir/image.json" ] && [ -f "$out_dir/vmlinuz" ] && [ -f "$out_dir/initrd.img" ] && [ -f "$out_dir/base.qcow2" ]; then
  log "up to date in $out_dir (inputs ${input_hash:0:12}); nothing to do"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-test-guest.XXXXXX")"
cleanup () { rm -rf "$work"; }
trap cleanup EXIT

log "downloading ${#pinned[@]} Debian packages: ${pinned[*]}"
apt_options=()
# As root, apt drops to the _apt user, which cannot write into a private temp dir.
[ "$(id -u)" = 0 ] && apt_options+=(-o APT::Sandbox::User=root)
(cd "$work" && apt-get download -q "${apt_options[@]}" "${pinned[@]}" >/dev/null) \
  || die "apt-get download failed; check the Debian archive is reachable and run 'apt-get update'"

log "unpacking packages"
mkdir -p "$work/pkgs"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/pkgs"; done

pkgs="$work/pkgs"
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib/x86_64-linux-gnu,lib64,etc/acpi/PWRF,proc,sys,dev,run,tmp,root,www,var/log}
ln -s ../run "$root/var/run"

log "installing busybox"
cp "$pkgs/bin/busybox" "$root/bin/busybox"
# `busybox --list` names busybox itself: linking it would replace the binary with a loop.
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] && continue
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

log "installing qemu-guest-agent and its libraries"
cp "$pkgs/usr/sbin/qemu-ga" "$root/usr/sbin/qemu-ga"
loader="$pkgs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
lib_path="$pkgs/lib/x86_64-linux-gnu:$pkgs/usr/lib/x86_64-linux-gnu"
needed="$("$loader" --library-path "$lib_path" --list "$pkgs/usr/sbin/qemu-ga")"
if grep -q 'not found' <<<"$needed"; then
  die "qemu-ga needs libraries that are not in the listed packages; add their packages to 'packages':
$(grep 'not found' <<<"$needed")"
fi
while read -r lib; do
  case "$lib" in
    "$pkgs"/*) cp -L "$lib" "$root/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
    *) die "qemu-ga resolved '$lib' outside the unpacked packages" ;;
  esac
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$needed")
cp -L "$loader" "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"

log "installing kernel modules"
kernel_version="${kernel_pkg#linux-image-}"
modules_dir="$pkgs/lib/modules/$kernel_version/kernel"
[ -d "$modules_dir" ] || die "no modules for $kernel_version in $kernel_pkg"
# The order insmod needs (dependencies first); every virtio driver is a module in the cloud kernel.
modules=(
  drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/char/virtio_console
  net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk
  drivers/input/evdev drivers/acpi/button
)
: > "$root/lib/modules/load-order"
for module in "${modules[@]}"; do
  file="$modules_dir/$module.ko"
  [ -f "$file" ] || die "$kernel_pkg has no uncompressed $module.ko; the guest needs it as a plain module"
  cp "$file" "$root/lib/modules/"
  basename "$file" >> "$root/lib/modules/load-order"
done
cp "$pkgs/boot/vmlinuz-$kernel_version" "$work/vmlinuz"

log "writing init, inittab and the web page"
cat > "$root/init" <<'EOF'
#!/bin/sh
# corral test guest: prepare devices, network and the agent port, then hand over to busybox init.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t devtmpfs devtmpfs /dev
# The kernel found no /dev/console before devtmpfs was mounted, so init starts with no stdio.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/qemu-ga
mount -t devpts devpts /dev/pts
for module in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$module" || echo "corral-guest: insmod $module failed"
done
ip link set lo up
# Virtio ports and NICs appear shortly after their modules load: wait a bounded while.
i=0
while [ $i -lt 100 ]; do
  [ -e /sys/class/net/eth0 ] && ls /sys/class/virtio-ports/*/name >/dev/null 2>&1 && break
  usleep 50000
  i=$((i + 1))
done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
else
  echo "corral-guest: no eth0"
fi
# udev would make these links; there is no udev here.
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
  [ -f "$port/name" ] || continue
  ln -sf "../$(basename "$port")" "/dev/virtio-ports/$(cat "$port/name")"
done
echo "corral-guest: ready for init"
exec /bin/busybox init
EOF
chmod 0755 "$root/init"

cat > "$root/etc/inittab" <<'EOF'
::respawn:/usr/sbin/qemu-ga --method=virtio-serial --path=/dev/virtio-ports/org.qemu.guest_agent.0 --statedir=/run/qemu-ga --pidfile=/run/qemu-ga/qemu-ga.pid
::respawn:/bin/httpd -f -p 80 -h /www
::respawn:/bin/nc -ll -p 8081 -e /bin/ws-echo
::respawn:/bin/nc -ll -p 22 -e /bin/ssh-like
::respawn:/bin/acpid -f -c /etc/acpi -l /var/log/acpid.log
::shutdown:/bin/echo corral-guest: shutting down
EOF

# busybox acpid runs /etc/acpi/PWRF/00000080 for the power button (QMP system_powerdown).
cat > "$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
exec /bin/poweroff
EOF
chmod 0755 "$root/etc/acpi/PWRF/00000080"

# qemu-ga's guest-shutdown runs /sbin/shutdown, which busybox does not have.
cat > "$root/sbin/shutdown" <<'EOF'
#!/bin/sh
case " $* " in
  *" -r "*) exec /bin/reboot ;;
  *) exec /bin/poweroff ;;
esac
EOF
chmod 0755 "$root/sbin/shutdown"

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'corral-test-guest\n' > "$root/etc/hostname"
cat > "$root/www/index.html" <<'EOF'
<!doctype html>
<title>corral test guest</title>
<p>corral test guest is up</p>
EOF

log "writing the proxy test services"
cat > "$root/bin/ws-echo" <<'EOF'
#!/bin/sh
# corral test guest: a websocket echo for one connection on stdin/stdout (run by nc -ll -e). Just
# enough RFC 6455 for tests: masked text/binary frames up to 64 KiB echoed, ping answered, close.
key=''
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in
    [Ss][Ee][Cc]-[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]-[Kk][Ee][Yy]:*) key=$(printf '%s' "${line#*:}" | tr -d ' \t') ;;
  esac
done
if [ -z "$key" ]; then
  printf 'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
  exit 0
fi
accept=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -c1-40 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
bytes () { dd bs=1 count="$1" 2>/dev/null | od -An -v -tu1; }
oct () { echo "\\$(($1 >> 6))$((($1 >> 3) & 7))$(($1 & 7))"; }
while :; do
  set -- $(bytes 2)
  [ $# -eq 2 ] || exit 0
  op=$(($1 & 15))
  len=$(($2 & 127))
  if [ "$len" -eq 126 ]; then
    set -- $(bytes 2)
    len=$((($1 << 8) | $2))
  elif [ "$len" -eq 127 ]; then
    exit 0
  fi
  set -- $(bytes 4)
  m0=$1 m1=$2 m2=$3 m3=$4
  payload=''
  i=0
  if [ "$len" -gt 0 ]; then
    for b in $(bytes "$len"); do
      case $((i % 4)) in 0) m=$m0 ;; 1) m=$m1 ;; 2) m=$m2 ;; *) m=$m3 ;; esac
      v=$((b ^ m))
      payload="$payload\\$((v >> 6))$(((v >> 3) & 7))$((v & 7))"
      i=$((i + 1))
    done
  fi
  case $op in
    8) printf '\210\000'; exit 0 ;;
    9) reply=10 ;;
    1|2) reply=$op ;;
    *) continue ;;
  esac
  first=$((128 | reply))
  header="\\$((first >> 6))$(((first >> 3) & 7))$((first & 7))"
  if [ "$len" -lt 126 ]; then
    header="$header\\$((len >> 6))$(((len >> 3) & 7))$((len & 7))"
  else
    hi=$((len >> 8)); lo=$((len & 255))
    header="$header\\176\\$((hi >> 6))$(((hi >> 3) & 7))$((hi & 7))\\$((lo >> 6))$(((lo >> 3) & 7))$((lo & 7))"
  fi
  printf "$header$payload"
done
EOF
cat > "$root/bin/ssh-like" <<'EOF'
#!/bin/sh
# corral test guest: speaks first like an SSH server (a version line), greets the client's own
# version line, then echoes every byte: a raw TCP exchange for port-forward tests.
printf 'SSH-2.0-corral-test-guest\r\n'
IFS= read -r line || exit 0
printf 'hello %s\n' "$(printf '%s' "$line" | tr -d '\r')"
exec cat
EOF
mkdir -p "$root/www/cgi-bin"
cat > "$root/www/cgi-bin/zeros" <<'EOF'
#!/bin/sh
# corral test guest CGI: /cgi-bin/zeros?MIB streams that many MiB of zero bytes (large downloads).
mib=${QUERY_STRING:-1}
case "$mib" in ''|*[!0-9]*) mib=1 ;; esac
printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' "$((mib * 1048576))"
exec dd if=/dev/zero bs=65536 count="$((mib * 16))" 2>/dev/null
EOF
chmod 0755 "$root/bin/ws-echo" "$root/bin/ssh-like" "$root/www/cgi-bin/zeros"

log "packing the initramfs"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$work/initrd.img"

log "creating the base disk"
printf 'corral-test-guest-base\n' > "$work/base.raw"
truncate -s 64M "$work/base.raw"
qemu-img convert -q -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"
rm -f "$work/base.raw"

cat > "$work/image.json" <<EOF
{
  "name": "corral-test-guest",
  "arch": "x86_64",
  "os": "linux",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "cmdline": "console=ttyS0 panic=-1 loglevel=4 mitigations=off",
  "disk": "base.qcow2",
  "defaultCpus": 1,
  "defaultMemoryMiB": 256,
  "diskMiB": 64,
  "agent": "qemu-ga",
  "ports": [80],
  "build": { "inputs": "$input_hash", "kernel": "$kernel_pkg" }
}
EOF

log "publishing to $out_dir"
staging="$out_dir.new.$$"
rm -rf "$staging"
mkdir -p "$staging"
mv "$work/image.json" "$work/vmlinuz" "$work/initrd.img" "$work/base.qcow2" "$staging/"
chmod 0444 "$staging/base.qcow2" "$staging/vmlinuz" "$staging/initrd.img"
printf '%s\n' "$input_hash" > "$staging/.build-hash"
rm -rf "$out_dir"
mv "$staging" "$out_dir"
log "built $out_dir (initrd $(du -h "$out_dir/initrd.img" | cut -f1), inputs ${input_hash:0:12})"
