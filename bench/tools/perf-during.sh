#!/usr/bin/env bash
# Profiles a hookline server while the harness drives it: runs one harness scenario
# against BIN, waits until a server started by the harness has used 0.5 s of CPU (the
# load has begun), then samples with perf for SECONDS.
#
#   bench/tools/perf-during.sh BIN SCENARIO [SECONDS] [THREAD]
#
# Without THREAD: the whole machine (server, harness, everything else), frame-pointer
# call chains; read it with `perf report -i OUT/perf.data --sort pid,comm,sym`.
# With THREAD (a thread name such as sqlite-writer or tokio-rt-worker): that one server
# thread, DWARF call chains, for inclusive costs (`perf report --children`).
# Needs perf and a release build with debug info (the workspace's release profile has it).
# OUT is target/bench/perf-<scenario>; the harness's own results go there too.
set -euo pipefail
bin=$(readlink -f "$1"); scenario=$2; secs=${3:-6}; thread=${4:-}
cd "$(dirname "$0")/../.."
out=target/bench/perf-$scenario
mkdir -p "$out"
./target/release/hookline-bench "$scenario" --hookline-bin "$bin" --out "$out" >"$out/harness.log" 2>&1 &
harness=$!
pid=
for _ in $(seq 1 2400); do
    for p in $(pgrep -f "^$bin serve" || true); do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        if [ "$t" -gt 50 ]; then pid=$p; fi
    done
    [ -n "$pid" ] && break
    sleep 0.05
done
[ -n "$pid" ] || { echo "no busy hookline server appeared" >&2; wait $harness; exit 1; }
if [ -n "$thread" ]; then
    # Several threads may share the name (tokio's blocking pool is also "tokio-rt-worker"):
    # take the one that has used the most CPU so far.
    tid=$(for f in $(grep -lx "$thread" /proc/"$pid"/task/*/comm); do
        t=$(echo "$f" | cut -d/ -f5)
        echo "$(awk '{print $14 + $15}' /proc/"$pid"/task/"$t"/stat) $t"
    done | sort -rn | head -1 | cut -d' ' -f2)
    echo "sampling thread $thread ($tid) of server $pid for ${secs}s"
    perf record -F 499 --call-graph dwarf,16384 -t "$tid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
else
    echo "sampling the machine (server $pid) for ${secs}s"
    perf record -F 999 -g -a -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
fi
wait $harness
tail -n 4 "$out/harness.log"
echo "profile: $out/perf.data"
