#!/bin/sh
# The init container of runtime-tap-installer.yaml: copies runtime-tap, its config and units
# onto the host, (re)starts the service, and fails (stopping the rollout) if it does not stay
# up, after putting the previous binary and config back.
set -eu
src=/opt/runtime-tap
host=/host
on_host() { nsenter -t 1 -m -u -i -n -p -- "$@"; }
# How long the restarted service must stay up, in seconds: longer than RestartSec= (1 s), so
# that a crash loop is seen as a restart or as "activating", never as "active".
settle=${RUNTIME_TAP_SETTLE_SECONDS:-5}

sockets=runtime-tap-containerd.socket
shape=containerd-node
if on_host systemctl cat docker.service >/dev/null 2>&1; then
  sockets="$sockets runtime-tap-dockerd.socket"
  shape=docker-node
fi

bin=$host/usr/local/bin/runtime-tap
config=$host/etc/runtime-tap/config.toml

# New binary and config beside the old ones; the new binary checks the config before
# anything is replaced, so a bad update leaves the node as it was.
install -m 0755 "$src/bin/runtime-tap" "$host/usr/local/bin/.runtime-tap.new"
install -m 0644 "/config/$shape.toml" "$host/etc/runtime-tap/.config.toml.new"
on_host /usr/local/bin/.runtime-tap.new check-config /etc/runtime-tap/.config.toml.new >/dev/null
# The running version is kept until the new one has proven itself (below).
had_old=no
if [ -e "$bin" ] && [ -e "$config" ]; then
  cp -p "$bin" "$bin.old"
  cp -p "$config" "$config.old"
  had_old=yes
fi
# Renamed over: a running runtime-tap keeps its old file until it restarts.
mv -f "$host/usr/local/bin/.runtime-tap.new" "$bin"
mv -f "$host/etc/runtime-tap/.config.toml.new" "$config"

install -m 0644 "$src/systemd/runtime-tap.service" "$host/etc/systemd/system/"
for s in $sockets; do
  install -m 0644 "$src/systemd/repoint/$s" "$host/etc/systemd/system/"
done

on_host systemctl daemon-reload
# Sockets first (already listening ones are left alone), then the service. A restart
# picks up the new binary and config; the sockets stay open and queue new connections.
# shellcheck disable=SC2086
on_host systemctl enable --now $sockets
on_host systemctl enable runtime-tap.service

prop() { on_host systemctl show -p "$1" --value runtime-tap.service; }

# Type=simple: `systemctl restart` returns once the process is forked, so "active" right
# after it proves nothing. Read the restart counter and the pid once the restart is done,
# wait, and require the same process, still active, with no automatic restart in between
# (Restart=on-failure would otherwise hide a crash loop behind "active").
healthy() {
  restarts=$(prop NRestarts)
  pid=$(prop MainPID)
  sleep "$settle"
  state=$(prop ActiveState)
  [ "$state" = active ] && [ "$(prop NRestarts)" = "$restarts" ] && [ "$(prop MainPID)" = "$pid" ] \
    && [ "$pid" != 0 ]
}

on_host systemctl restart runtime-tap.service
if ! healthy; then
  echo "runtime-tap.service did not stay up after the update (state=$(prop ActiveState)," \
    "restarts $restarts -> $(prop NRestarts), pid $pid -> $(prop MainPID)):" >&2
  on_host journalctl -u runtime-tap.service -n 50 --no-pager >&2 || true
  if [ "$had_old" = yes ]; then
    echo "putting the previous runtime-tap and config back" >&2
    mv -f "$bin.old" "$bin"
    mv -f "$config.old" "$config"
    on_host systemctl restart runtime-tap.service || true
  fi
  # Failing the init container keeps this pod unready, which stops the rolling update here.
  exit 1
fi
rm -f "$bin.old" "$config.old"
echo "runtime-tap installed: $shape, re-pointing layout, sockets: $sockets, up for ${settle}s"
