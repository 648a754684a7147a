#!/usr/bin/env bash
# corral quick start: on a fresh Debian/Ubuntu machine and a fresh clone, install what is missing,
# build the tiny test guest, start a node with the qemu driver, boot one VM, run `uname -a` in it,
# and leave the node running in this terminal (Ctrl-C stops it).
#
#   ./scripts/quickstart.sh            # qemu (a real VM)
#   CORRAL_DRIVER=sim ./scripts/quickstart.sh   # simulated VMs, no hypervisor needed
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

step () { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
as_root () { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi }

driver="${CORRAL_DRIVER:-qemu}"
export CORRAL_DATA_DIR="${CORRAL_DATA_DIR:-$repo/.corral}"
export CORRAL_API_ADDR="${CORRAL_API_ADDR:-127.0.0.1:8080}"
export CORRAL_URL="http://$CORRAL_API_ADDR"
export CORRAL_CONFIG_DIR="${CORRAL_CONFIG_DIR:-$CORRAL_DATA_DIR/cli}"

missing=()
for pkg in $(grep -Ev '^\s*(#|$)' scripts/ci-apt-packages.txt); do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# npm only runs the install; any Node will do for that, so Debian's is used only where there is none.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  step "Installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "Installing npm packages (npm ci; brings Node 24 as the npm package 'node')"
  npm ci --no-audit --no-fund
fi
export PATH="$repo/node_modules/.bin:$PATH"
# npm ci compiled src/ into dist/; a clone whose sources changed since then compiles again (a second),
# since the node runs dist/ only while it matches src/ (the TypeScript sources cost it more memory).
node scripts/build.js --optional --if-stale
corral () { node "$repo/bin/corral.js" "$@"; }

image=sim-ubuntu-24.04
if [ "$driver" = qemu ]; then
  step "Building the test guest (cached after the first run)"
  bash scripts/build-test-guest.sh "$repo/.cache/test-guest"
  export CORRAL_QEMU_IMAGE_DIRS="$repo/.cache"
  image=corral-test-guest
fi

if [ -z "${CORRAL_ADMIN_PASSWORD:-}" ]; then
  if [ -f "$CORRAL_DATA_DIR/quickstart-admin-password" ]; then
    CORRAL_ADMIN_PASSWORD="$(cat "$CORRAL_DATA_DIR/quickstart-admin-password")"
  else
    mkdir -p "$CORRAL_DATA_DIR"
    CORRAL_ADMIN_PASSWORD="$(node -e "process.stdout.write(require('node:crypto').randomBytes(12).toString('base64url'))")"
    (umask 077; printf '%s' "$CORRAL_ADMIN_PASSWORD" > "$CORRAL_DATA_DIR/quickstart-admin-password")
  fi
fi
export CORRAL_ADMIN_PASSWORD

step "Starting corral node (driver $driver) on $CORRAL_URL"
log="$CORRAL_DATA_DIR/node.log"
mkdir -p "$CORRAL_DATA_DIR"
CORRAL_DRIVER="$driver" CORRAL_LOG_FORMAT=json node "$repo/bin/corral.js" node > "$CORRAL_DATA_DIR/node.out" 2> "$log" &
node_pid=$!
trap 'kill $node_pid 2>/dev/null || true' INT TERM
for _ in $(seq 1 100); do
  grep -q 'corral node ready' "$CORRAL_DATA_DIR/node.out" 2>/dev/null && break
  kill -0 "$node_pid" 2>/dev/null || { echo "corral node exited; its log ($log):"; tail -n 20 "$log"; exit 1; }
  sleep 0.2
done
grep -q 'corral node ready' "$CORRAL_DATA_DIR/node.out" || { echo "corral node did not start within 20 s; see $log"; kill "$node_pid"; exit 1; }

step "Logging in as admin"
corral login --username admin --password "$CORRAL_ADMIN_PASSWORD"

step "Booting a VM from $image"
vm_json="$(corral --json vm create "$image" --name "quickstart-$(date +%s)")"
vm_id="$(printf '%s' "$vm_json" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write(JSON.parse(s).id))")"
echo "VM $vm_id is running"

step "Running uname -a in it"
corral vm exec "$vm_id" -- uname -a

token="$(node -e "process.stdout.write(JSON.parse(require('node:fs').readFileSync('$CORRAL_CONFIG_DIR/session.json','utf8')).token)")"
cat <<NEXT

corral is running.
  API:            $CORRAL_URL   (OpenAPI: $CORRAL_URL/api/openapi.json)
  admin password: $CORRAL_ADMIN_PASSWORD   (kept in $CORRAL_DATA_DIR/quickstart-admin-password)
  token:          $token
  node log:       $log

Next, in another terminal (from $repo):
  export PATH=\$PWD/node_modules/.bin:\$PATH CORRAL_URL=$CORRAL_URL CORRAL_CONFIG_DIR=$CORRAL_CONFIG_DIR
  npx corral vm list
  npx corral vm exec $vm_id -- cat /proc/cpuinfo
  npx corral vm create $image --name another
  npx corral vm delete $vm_id
  TOKEN=\$(node -p "require('$CORRAL_CONFIG_DIR/session.json').token")
  curl -H "Authorization: Bearer \$TOKEN" $CORRAL_URL/api/v1/hosts

The node keeps running here; Ctrl-C stops it (VMs keep their records and are reconciled next start).
NEXT
wait "$node_pid"
