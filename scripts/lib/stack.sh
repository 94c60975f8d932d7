# Shared by scripts/demo and scripts/bench: a whole attestboot stack on this machine — a
# throwaway Postgres, the three services with an embedded userspace WireGuard gateway in a
# "gateway" network namespace, and a "nodes" namespace for nodesim — and its removal.
# Source it and call stack_up NAME; stack_down runs on exit, Ctrl-C or SIGTERM (stack_up installs
# the traps).
#
# After stack_up: $STACK (work dir), $BIN (binaries, and $BIN/ctl: attestctl wired to the stack),
# $PKI, $LOGS, $DB (database URL), $GW and $NS (namespaces), $GWIP, $PGDATA, and
# PIDS[attestor|tunnelmgr|metadata] (service process ids; with REPLICAS=N, N>1, also attestor-2 ..
# attestor-N and metadata-2 .. metadata-N: replicas sharing the first one's addresses through
# SO_REUSEPORT, the kernel spreading the nodes' connections among them, metrics on 9111, 9121, ..
# and 9113, 9123, ..).

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

declare -A PIDS=()
MOUNTS=()

# stack_tmpfs DIR: a tmpfs at DIR (made under $STACK), unmounted by stack_down.
stack_tmpfs() {
	mkdir -p "$1" && mount -t tmpfs -o mode=755 tmpfs "$1" && MOUNTS+=("$1")
}

stack_down() {
	trap - INT TERM EXIT
	say "stopping and removing everything the run created"
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	jobs -p | xargs -r kill 2>/dev/null || true
	# Graceful shutdowns get 15 s; whatever still runs then is killed, so cleanup never hangs.
	for _ in $(seq 1 150); do
		[ -z "$(jobs -pr)" ] && break
		sleep 0.1
	done
	jobs -pr | xargs -r kill -9 2>/dev/null || true
	wait 2>/dev/null || true
	[ -n "${PGBIN:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
	ip netns del "$GW" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -f /var/run/wireguard/"$WGIF".sock
	for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	[ -n "${KEEP:-}" ] || rm -rf "$STACK"
}

# stack_up NAME: NAME (at most 6 letters) prefixes namespaces and interfaces.
stack_up() {
	local name=$1
	[ "$(id -u)" = 0 ] || { echo "$name: needs root (network namespaces, TUN); try: sudo make $name" >&2; exit 2; }
	STACK=$(mktemp -d "/tmp/attestboot-$name.XXXXXX")
	chmod 755 "$STACK"
	BIN=$STACK/bin PKI=$STACK/pki LOGS=$STACK/logs PGDATA=$STACK/pg/data
	GW=ab$name-gw NS=ab$name-nodes GWIP=10.99.0.1 WGIF=ab$name-wg0
	mkdir -p "$BIN" "$LOGS"
	trap stack_down EXIT
	trap 'stack_down; exit 130' INT TERM
	# Leftovers of an interrupted earlier run.
	ip netns del "$GW" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true

	# A storm of N nodes holds a few descriptors per node at once, in the services and in the
	# simulator (its WireGuard ends' UDP sockets, its gRPC connections): 20,000 is not enough
	# for 10,000 nodes.
	ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

	say "building the binaries"
	go build -o "$BIN" ./attestor/cmd/attestor ./tunnelmgr/cmd/tunnelmgr ./metadata/cmd/metadata \
		./node-agent/cmd/node-agent ./node-agent/cmd/nodesim ./attestctl/cmd/attestctl

	say "starting a throwaway Postgres"
	PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	mkdir -p "$STACK/pg" && chown postgres "$STACK/pg"
	runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
	# autovacuum_naptime=1: this inventory is new, and until autovacuum analyzes its tables
	# (every minute by default) the planner has no statistics and may look a tunnel up by
	# address through the wrong open-tunnel index, scanning all of them (ten times the cost,
	# nine times per boot). An inventory in use has them: so does this one, within a second of
	# the storm's start (docs/scaling.md, "Postgres").
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$STACK/pg/postgres.log" -w \
		-o "-c listen_addresses= -k $STACK/pg -p 5432 -c fsync=off -c synchronous_commit=off -c max_connections=300 -c autovacuum_naptime=1" start >/dev/null
	runuser -u postgres -- "$PGBIN/createdb" -h "$STACK/pg" -p 5432 attestboot
	DB="postgres:///attestboot?host=$STACK/pg&port=5432&user=postgres"

	say "making a gateway host and a nodes host (network namespaces joined by veth)"
	ip netns add "$GW" && ip netns add "$NS"
	ip link add "ab$name-g" netns "$GW" type veth peer name "ab$name-n" netns "$NS"
	ip -n "$GW" addr add $GWIP/24 dev "ab$name-g" && ip -n "$NS" addr add 10.99.0.2/24 dev "ab$name-n"
	ip -n "$GW" link set lo up && ip -n "$NS" link set lo up
	ip -n "$GW" link set "ab$name-g" up && ip -n "$NS" link set "ab$name-n" up

	head -c 32 /dev/urandom > "$STACK/kek" && chmod 600 "$STACK/kek"
	local common=(-database-url "$DB" -state-dir "$PKI" -tls-hosts "$GWIP")
	say "starting attestor, tunnelmgr (embedded WireGuard gateway) and metadata"
	local replicas=${REPLICAS:-1} reuse=() i
	[ "$replicas" -gt 1 ] && reuse=(-reuse-port)
	_start attestor -listen $GWIP:7443 -metrics-listen 127.0.0.1:9101 "${common[@]}" "${reuse[@]}"
	_wait_port 7443
	for i in $(seq 2 "$replicas"); do
		_start attestor-$i -listen $GWIP:7443 -metrics-listen 127.0.0.1:91${i}1 "${common[@]}" "${reuse[@]}"
	done
	_start tunnelmgr -listen $GWIP:7444 -metrics-listen 127.0.0.1:9102 "${common[@]}" \
		-gateway gw0 -wg-interface "$WGIF" -wg-port 51820 -endpoint $GWIP:51820 -pool-v4 100.64.0.0/16
	_wait_port 7444
	local meta=(-listen $GWIP:7445 "${common[@]}" "${reuse[@]}"
		-gateway gw0 -wg-interface "$WGIF" -http-listen 100.64.0.1:80 -kek-file "$STACK/kek"
		-tunnelmgr-addr $GWIP:7444 -tunnelmgr-ca "$PKI/ca.pem" -tunnelmgr-cert "$PKI/admin.pem" -tunnelmgr-key "$PKI/admin-key.pem")
	_start metadata -metrics-listen 127.0.0.1:9103 "${meta[@]}"
	_wait_port 7445
	for i in $(seq 2 "$replicas"); do
		_start metadata-$i -metrics-listen 127.0.0.1:91${i}3 "${meta[@]}"
	done
	for i in $(seq 2 "$replicas"); do
		_wait_metrics 91${i}1 && _wait_metrics 91${i}3
	done

	# attestctl with the stack's addresses and admin credential, run on the gateway host.
	cat > "$BIN/ctl" <<CTL
#!/usr/bin/env bash
exec ip netns exec $GW "$BIN/attestctl" -attestor $GWIP:7443 -tunnelmgr $GWIP:7444 -metadata $GWIP:7445 -state-dir "$PKI" "\$@"
CTL
	chmod +x "$BIN/ctl"
}

# nodesim runs the simulator on the nodes host against the stack, enrolling its nodes.
nodesim() {
	ip netns exec "$NS" "$BIN/nodesim" -attestor $GWIP:7443 -tunnelmgr $GWIP:7444 -ca "$PKI/ca.pem" \
		-enroll -admin-cert "$PKI/admin.pem" -admin-key "$PKI/admin-key.pem" -work-dir "$STACK" "$@"
}

_start() { # name (a binary, or binary-N for a replica), args...
	local name=$1; shift
	ip netns exec "$GW" "$BIN/${name%-[0-9]*}" serve "$@" >"$LOGS/$name.log" 2>&1 &
	PIDS[$name]=$!
}

_wait_metrics() { # port: a replica is up when its metrics answer (its service port is shared)
	for _ in $(seq 1 300); do
		ip netns exec "$GW" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "a replica never opened its metrics port $1; see $LOGS" >&2
	exit 1
}

_wait_port() { # port
	for _ in $(seq 1 300); do
		ip netns exec "$GW" bash -c "exec 3<>/dev/tcp/$GWIP/$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on $GWIP:$1; see $LOGS" >&2
	exit 1
}
