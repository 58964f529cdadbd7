#!/usr/bin/env bash
# bench/onion_wan.sh [PROFILE] [bench/onion.py flags...]: bench/onion.py (onion services, Tor's
# and onionmesh's, first connection and bulk) under the WAN-like conditions of
# ../shared/bench/wan/run.sh, inside a network namespace this script creates and deletes.
#
# The profiles and the emulator are run.sh's (the same numbers, the same nfq_netem.c when the
# kernel has no sch_netem): every packet on the namespace's own lo is delayed (once per one-way
# crossing), jittered, dropped or rate-limited.  Nothing outside the namespace is touched.
# Needs root (ip netns).  Prints wan.* lines, then bench/onion.py's lines.
set -euo pipefail
WAN=${WAN_DIR:-$(cd "$(dirname "$0")/../../shared/bench/wan" 2>/dev/null && pwd || true)}
[ -n "$WAN" ] && [ -f "$WAN/nfq_netem.c" ] || { echo "../shared/bench/wan is not here" >&2; exit 2; }
profile_params() {  # run.sh's table, kept identical
    case "$1" in
        lan)              echo "1 0 0 0" ;;
        continental)      echo "20 2 0 0" ;;
        intercontinental) echo "60 5 0.1 0" ;;
        lossy)            echo "30 0 1 0" ;;
        slow)             echo "20 0 0 20000000" ;;
        *) return 1 ;;
    esac
}
PROFILE=${1:-continental}
shift || true
read -r DELAY JITTER LOSS RATE < <(profile_params "$PROFILE") || { echo "unknown profile $PROFILE" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$(command -v python3)}
WORK=${WORK:-/tmp/onion-wan}
mkdir -p "$WORK"
NS=omhswan$$
EMU_PID=
cleanup() {
    set +e
    if [ -n "$EMU_PID" ] && kill -0 "$EMU_PID" 2>/dev/null; then kill -TERM "$EMU_PID"; wait "$EMU_PID" 2>/dev/null; fi
    if ip netns list | grep -qw "$NS"; then
        for pid in $(ip netns pids "$NS"); do kill -TERM "$pid" 2>/dev/null; done  # ours: started in it
        for _ in $(seq 50); do [ -z "$(ip netns pids "$NS")" ] && break; sleep 0.1; done
        for pid in $(ip netns pids "$NS"); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$NS"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { ip netns exec "$NS" "$@"; }
ip netns add "$NS"
nsx ip link set lo up
TC_ARGS="limit 200000 delay ${DELAY}ms"
[ "$JITTER" != 0 ] && TC_ARGS+=" ${JITTER}ms"
[ "$LOSS" != 0 ] && TC_ARGS+=" loss ${LOSS}%"
if [ "$RATE" != 0 ]; then TC_ARGS+=" rate ${RATE}bit"; elif [ "$JITTER" != 0 ]; then TC_ARGS+=" rate 100gbit"; fi
if nsx tc qdisc add dev lo root netem $TC_ARGS 2>"$WORK/tc.err"; then
    used="tc-netem"
else
    if [ ! -x "$WORK/nfq_netem" ] || [ "$WAN/nfq_netem.c" -nt "$WORK/nfq_netem" ]; then
        gcc -O2 -Wall -o "$WORK/nfq_netem" "$WAN/nfq_netem.c"
    fi
    ip netns exec "$NS" "$WORK/nfq_netem" 0 "$DELAY" "$JITTER" "$LOSS" "$RATE" 200000 "$$" 2>"$WORK/emulator.log" &
    EMU_PID=$!
    for _ in $(seq 50); do grep -q '^nfq_netem: queue' "$WORK/emulator.log" && break; sleep 0.1; done
    grep -q '^nfq_netem: queue' "$WORK/emulator.log" || { cat "$WORK/emulator.log" >&2; exit 1; }
    if command -v iptables-legacy >/dev/null; then
        nsx iptables-legacy -t raw -A PREROUTING -i lo -j NFQUEUE --queue-num 0
    else  # the same hook with nft: every packet arriving on the namespace's lo, before conntrack
        nsx nft add table inet omhs
        nsx nft add chain inet omhs pre '{ type filter hook prerouting priority -300 ; }'
        nsx nft add rule inet omhs pre iif lo queue num 0
    fi
    used="nfq_netem"
fi
echo "wan.profile $PROFILE"
echo "wan.params delay=${DELAY}ms jitter=${JITTER}ms loss=${LOSS}% rate=${RATE}bit/s (per crossing of lo)"
echo "wan.emulator $used"
nsx "$PY" "$HERE/onion.py" "$@"
