#!/usr/bin/env bash
# raftmq vs NATS JetStream R3 (file store) on this machine, side by side, in one run:
# installs nats-server from Debian if missing, starts a 3-node JetStream cluster and a
# 3-node raftmq group (three `raftmq serve` processes, flush=sync, as deployed) on
# 127.0.0.1, runs the same loads against both (publish, consume, consume with a per-message
# ack, one message at a time), prints one table with the ratio, and stops every process it
# started.
# Usage: bench/compare-nats.sh [seconds per case, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v nats-server >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
fi
scripts/setup
cargo build --release --locked -p raftmq-node -p raftmq-bench
(cd bench/nats-load && CARGO_TARGET_DIR=../../target/nats-load cargo build --release)
raftmq=target/release/raftmq
natsload=target/nats-load/release/nats-load

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  cat > "$tmp/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:1422$i
jetstream { store_dir: "$tmp/n$i" }
cluster {
  name: bench
  listen: 127.0.0.1:1622$i
  routes: [nats-route://127.0.0.1:16221, nats-route://127.0.0.1:16222, nats-route://127.0.0.1:16223]
}
CONF
  nats-server -c "$tmp/n$i.conf" >"$tmp/nats$i.log" 2>&1 &
  pids+=($!)
done
peers=1=127.0.0.1:18081,2=127.0.0.1:18082,3=127.0.0.1:18083
for i in 1 2 3; do
  "$raftmq" serve --node-id "$i" --listen "127.0.0.1:1808$i" --peers "$peers" \
    --data-dir "$tmp/raftmq$i" --auto-create-topics true >"$tmp/raftmq$i.log" 2>&1 &
  pids+=($!)
done

# Wait for JetStream to have a meta leader (creating the stream succeeds) and for raftmq.
for _ in $(seq 60); do
  "$natsload" --mode publish --duration 1 --stream WARMUP >/dev/null 2>&1 && break
  sleep 1
done
urls=http://127.0.0.1:18081,http://127.0.0.1:18082,http://127.0.0.1:18083

# One case's JSON summary on one line; a case that fails says why (its stderr's end).
run() {
  local out
  out=$("$@" 2>"$tmp/case.err") || { echo "$* failed:" >&2; tail -5 "$tmp/case.err" >&2; return 1; }
  python3 -c 'import json,sys; t=sys.stdin.read(); print(json.dumps(json.loads(t[t.index("{"):])))' <<<"$out"
}
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$(run "${@:3}")"; }
{
  row nats "100B publish" "$natsload" --mode publish --size 100 --inflight 256 --duration "$secs" --stream P100
  row nats "1KiB publish" "$natsload" --mode publish --size 1024 --inflight 256 --duration "$secs" --stream P1K
  row nats "100B consume" "$natsload" --mode consume --size 100 --duration "$secs" --stream P100
  row nats "100B acked" "$natsload" --mode acked --size 100 --duration "$secs" --stream P100
  row nats "latency" "$natsload" --mode latency --size 100 --duration "$secs" --stream LAT
  row raftmq "100B publish" "$raftmq" bench --url "$urls" --mode produce --size 100 --batch 100 --concurrency 16 --duration "$secs" --topic p100
  row raftmq "1KiB publish" "$raftmq" bench --url "$urls" --mode produce --size 1024 --batch 100 --concurrency 16 --duration "$secs" --topic p1k
  row raftmq "100B consume" "$raftmq" bench --url "$urls" --mode consume --size 100 --batch 1000 --concurrency 8 --duration "$secs" --topic p100
  row raftmq "100B acked" "$raftmq" bench --url "$urls" --mode group --size 100 --batch 256 --concurrency 16 --duration "$secs" --topic p100
  row raftmq "latency" "$raftmq" bench --url "$urls" --mode latency --size 100 --duration "$secs" --topic lat
} > "$tmp/results.tsv"

python3 - "$tmp/results.tsv" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    system, case, data = line.rstrip("\n").split("\t", 2)
    rows[(system, case)] = json.loads(data)
print(f"{'case':<14} {'NATS JetStream R3':>18} {'raftmq (sync)':>16} {'raftmq/NATS':>12}")
for case in ["100B publish", "1KiB publish", "100B consume", "100B acked"]:
    n, r = rows[("nats", case)], rows[("raftmq", case)]
    print(f"{case:<14} {n['msgs_per_s']:>12.0f} msg/s {r['msgs_per_s']:>10.0f} msg/s {r['msgs_per_s'] / n['msgs_per_s']:>11.2f}x")
    if case == "1KiB publish":
        print(f"{'  (MB/s)':<14} {n['mb_per_s']:>12.1f} MB/s  {r['mb_per_s']:>10.1f} MB/s")
n, r = rows[("nats", "latency")]["latency_ms"], rows[("raftmq", "latency")]["latency_ms"]
for p in ["p50", "p99"]:
    print(f"{'latency ' + p:<14} {n[p]:>15.2f} ms {r[p]:>13.2f} ms")
print("(NATS JetStream acks before fsync; raftmq acks after fsync on a majority.")
print(" 'acked': NATS pull consumer with explicit per-message acks vs raftmq consumer-group")
print(" receive + ack of every message.)")
PY
