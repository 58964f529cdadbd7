#!/usr/bin/env bash
# bench/tornet_hs.sh: a copy of ../shared/bench/tornet/run.sh (the private Tor network of Debian's
# `tor` on loopback) extended with an onion service: a second client tor with HiddenServiceDir
# for the same local HTTP server, so that bench/onion.py can set onionmesh's onion services
# side by side with Tor's.  Added measurements (keys tor.hs_*):
#   tor.hs_publish_s         service tor launched -> its first HS_DESC UPLOADED event
#   tor.hs_first_ttfb_ms     first connection to the service (descriptor fetch, introduction,
#                            rendezvous, HTTP): curl time_starttransfer after SIGNAL NEWNYM,
#                            which empties the client's onion-service caches; HS_FIRST_RUNS runs
#   tor.hs_small_ttfb_ms     1 KiB over the already-joined circuit (same SOCKS credentials)
#   tor.hs_bulk_MBps         BULK_MIB through the joined six-hop circuit, median of BULK_RUNS
# Env knobs added: HS_FIRST_RUNS (5) SKIP_EXIT_BENCH (0: 1 skips the exit-circuit measurements)
#
# What follows is run.sh's own description.
# Performance anchor: the real Tor (C, Debian package `tor`) on a private
# loopback-only test network (TestingTorNetwork), measured end to end.
#
#   3 directory authorities (non-exit relays) + 3 exit relays + 1 client
#   (SocksPort + ControlPort), all bound to 127.0.0.1, built from scratch in a
#   fresh temp dir, torn down (by saved PIDs) and deleted at the end.
#
# Prints parseable lines "<key> <value>" (keys prefixed tor./direct./net.);
# errors go to stderr. MB = 10^6 bytes. Takes ~1.5 minutes on 2 cores.
#
# What is measured (all tor defaults apart from the test-network options):
#   tor.bootstrap_s        launch of all tor processes -> client 100%
#   tor.circ_build_ms_*    EXTENDCIRCUIT over 3 named relays -> CIRC BUILT,
#                          CIRC_N random paths once every link is open
#                          ("cold": first pass, which opens the TLS links)
#   tor.bulk_MBps          curl --socks5-hostname, BULK_MIB file, fresh
#                          circuit per run (SOCKS auth isolation), median
#   tor.small_*_ms         1 KiB file, new stream on an existing circuit
#   direct.*               the same curl fetches without tor
#   tor.bulk_cpu_*         utime+stime of all tor processes during bulk runs
#
# Env knobs: BULK_MIB (64) BULK_RUNS (5) SMALL_RUNS (20) CIRC_N (20)
#            N_EXITS (3) KEEP_TMP (0: delete temp dir at the end)
#            EXTRA_TORRC ("" : extra torrc lines for every node, ";"-separated)
set -euo pipefail

if ! command -v tor >/dev/null 2>&1 || ! command -v tor-gencert >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "tor / tor-gencert not found; install Debian's 'tor' package" >&2
        exit 2
    fi
    # Install without letting the package start the system tor service
    # (it would try to reach the public Tor network): a policy-rc.d that
    # forbids service starts, removed again if we created it.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tor >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
command -v curl >/dev/null 2>&1 || { echo "curl is required" >&2; exit 2; }

exec python3 - "$@" <<'PYEOF'
import os, sys, re, time, socket, signal, random, shutil, statistics
import subprocess, tempfile, base64

T_SCRIPT0 = time.monotonic()
TOR = shutil.which("tor")
GENCERT = shutil.which("tor-gencert")
BULK_MIB = int(os.environ.get("BULK_MIB", "64"))
BULK_RUNS = int(os.environ.get("BULK_RUNS", "5"))
SMALL_RUNS = int(os.environ.get("SMALL_RUNS", "20"))
CIRC_N = int(os.environ.get("CIRC_N", "20"))
N_AUTH = 3
N_EXIT = int(os.environ.get("N_EXITS", "3"))
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
EXTRA_TORRC = os.environ.get("EXTRA_TORRC", "").replace(";", "\n")
HS_FIRST_RUNS = int(os.environ.get("HS_FIRST_RUNS", "5"))
SKIP_EXIT_BENCH = os.environ.get("SKIP_EXIT_BENCH", "0") == "1"
BOOTSTRAP_TIMEOUT = 180
CLK_TCK = os.sysconf("SC_CLK_TCK")
# curl must never be sent to a proxy from the environment
CURL_ENV = {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}

children = []          # (name, Popen) of every process we started
tmp = tempfile.mkdtemp(prefix="tornet.")


def out(key, val):
    print(f"{key} {val}", flush=True)


def note(msg):
    print(f"# {msg}", flush=True)


def teardown():
    for name, p in reversed(children):
        if p.poll() is None:
            try:
                p.terminate()          # SIGTERM: tor exits at once
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for name, p in children:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if KEEP_TMP:
        note(f"kept temp dir {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def median(xs):
    return statistics.median(xs)


def pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


# ---------------------------------------------------------------- control port
class Control:
    def __init__(self, port, cookie_path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.events = []
        cookie = open(cookie_path, "rb").read().hex()
        self.cmd(f"AUTHENTICATE {cookie}")

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("control connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _reply(self):
        """Read one reply (possibly multi-line); async 650 events are queued."""
        lines = []
        while True:
            line = self._line()
            if line.startswith("650"):
                self.events.append(line)
                if line[3] == "+":           # multi-line event: skip body
                    while self._line() != ".":
                        pass
                continue
            code, sep, rest = line[:3], line[3], line[4:]
            if sep == "+":                   # data reply
                data = []
                while True:
                    l = self._line()
                    if l == ".":
                        break
                    data.append(l[1:] if l.startswith("..") else l)
                lines.append((code, rest + "\n" + "\n".join(data)))
                continue
            lines.append((code, rest))
            if sep == " ":
                return lines

    def cmd(self, c):
        self.sock.sendall(c.encode() + b"\r\n")
        r = self._reply()
        if r[-1][0] != "250":
            raise RuntimeError(f"control {c.split()[0]}: {r}")
        return r

    def getinfo(self, key):
        r = self.cmd(f"GETINFO {key}")
        for code, text in r:
            if text.startswith(key + "="):
                return text[len(key) + 1:].lstrip("\n")
        return ""

    def next_event(self, timeout):
        if self.events:
            return self.events.pop(0)
        self.sock.settimeout(timeout)
        try:
            line = self._line()
        finally:
            self.sock.settimeout(30)
        if line.startswith("650"):
            return line
        return None


# ----------------------------------------------------------------- network
try:
    version = subprocess.run([TOR, "--version"], capture_output=True, text=True).stdout
    tor_version = re.search(r"Tor version ([^\s]+?)\.?\s", version).group(1)
    out("tor.version", tor_version)
    out("net.layout", f"{N_AUTH}auth+{N_EXIT}exit+1client")

    nodes = []   # dicts: nick, dir, role, orport, dirport
    ports = iter(free_ports(2 * N_AUTH + N_EXIT + 3))
    for i in range(N_AUTH):
        nodes.append(dict(nick=f"auth{i}", role="auth", orport=next(ports), dirport=next(ports)))
    for i in range(N_EXIT):
        nodes.append(dict(nick=f"exit{i}", role="exit", orport=next(ports)))
    client = dict(nick="client", role="client", socks=next(ports), ctl=next(ports))
    http_port = next(ports)
    service = dict(nick="service", role="service", ctl=free_ports(1)[0])
    for n in nodes + [client, service]:
        n["dir"] = os.path.join(tmp, n["nick"])
        os.makedirs(os.path.join(n["dir"], "keys"), mode=0o700)

    # --- keys: authority v3 certs (tor-gencert), relay identities (tor --list-fingerprint)
    t0 = time.monotonic()
    for n in nodes:
        keys = os.path.join(n["dir"], "keys")
        if n["role"] == "auth":
            subprocess.run([GENCERT, "--create-identity-key", "--passphrase-fd", "0",
                            "-i", f"{keys}/authority_identity_key",
                            "-s", f"{keys}/authority_signing_key",
                            "-c", f"{keys}/authority_certificate",
                            "-m", "12", "-a", f"127.0.0.1:{n['dirport']}"],
                           input="\n", capture_output=True, text=True, check=True)
            cert = open(f"{keys}/authority_certificate").read()
            n["v3ident"] = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.M).group(1)
        r = subprocess.run([TOR, "--ignore-missing-torrc", "-f", "/dev/null",
                            "--defaults-torrc", "/dev/null", "--DataDirectory", n["dir"],
                            "--ORPort", "1", "--Nickname", n["nick"], "--list-fingerprint"],
                           capture_output=True, text=True, check=True)
        n["fp"] = "".join(r.stdout.strip().splitlines()[-1].split()[1:])
        assert re.fullmatch(r"[0-9A-F]{40}", n["fp"]), r.stdout
    out("net.keygen_s", f"{time.monotonic() - t0:.2f}")

    dirauth_lines = "".join(
        f"DirAuthority {n['nick']} orport={n['orport']} v3ident={n['v3ident']} "
        f"127.0.0.1:{n['dirport']} {n['fp']}\n" for n in nodes if n["role"] == "auth")

    common = f"""TestingTorNetwork 1
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteGuard *
TestingDirAuthVoteHSDir *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
RunAsDaemon 0
Sandbox 0
ShutdownWaitLength 0
SafeLogging 0
LogTimeGranularity 1
Log notice file {{dir}}/notice.log
DataDirectory {{dir}}
PidFile {{dir}}/pid
Nickname {{nick}}
__OwningControllerProcess {os.getpid()}
{dirauth_lines}"""
    relay = """SocksPort 0
Address 127.0.0.1
ORPort 127.0.0.1:{orport}
AssumeReachable 1
ExtendAllowPrivateAddresses 1
ContactInfo {nick}@test.invalid
# no DNS at all: exits only ever connect to 127.0.0.1 literals
ServerDNSResolvConfFile /dev/null
ServerDNSDetectHijacking 0
ServerDNSTestAddresses
"""
    auth = """ExitRelay 0
DirPort 127.0.0.1:{dirport}
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
TestingV3AuthInitialVotingInterval 20
TestingV3AuthInitialVoteDelay 4
TestingV3AuthInitialDistDelay 4
V3AuthVotingInterval 20
V3AuthVoteDelay 4
V3AuthDistDelay 4
"""
    # The exit policy allows loopback only.  A microdescriptor policy summary
    # ignores private ranges (it would read "reject 1-65535"), so the client
    # uses full descriptors, where the real policy is honoured.
    exitp = """ExitRelay 1
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy reject *:*
"""
    clientc = """SocksPort 127.0.0.1:{socks}
ControlPort 127.0.0.1:{ctl}
CookieAuthentication 1
UseMicrodescriptors 0
"""
    for n in nodes + [client]:
        body = common
        if n["role"] == "auth":
            body += relay + auth
        elif n["role"] == "exit":
            body += relay + exitp
        else:
            body += clientc
        body += EXTRA_TORRC + "\n"
        n["torrc"] = os.path.join(n["dir"], "torrc")
        with open(n["torrc"], "w") as f:
            f.write(body.format(**n))
    # the service: a client-only tor publishing the HTTP server below as a v3 onion service
    hs_dir = os.path.join(service["dir"], "hs")
    body = common + f"""SocksPort 0
ControlPort 127.0.0.1:{service['ctl']}
CookieAuthentication 1
UseMicrodescriptors 0
HiddenServiceDir {hs_dir}
HiddenServicePort 80 127.0.0.1:{http_port}
"""
    for n in [service]:
        body += EXTRA_TORRC + "\n"
        n["torrc"] = os.path.join(n["dir"], "torrc")
        with open(n["torrc"], "w") as f:
            f.write(body.format(**n))

    # --- launch everything at once; the clock for bootstrap starts here
    t_launch = time.monotonic()
    for n in nodes + [client]:
        p = subprocess.Popen([TOR, "-f", n["torrc"], "--defaults-torrc", "/dev/null"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(n["dir"], "stderr.log"), "w"))
        n["pid"] = p.pid
        children.append((n["nick"], p))

    def check_alive():
        for name, p in children:
            if p.poll() is not None:
                n = next(x for x in nodes + [client, service] if x["nick"] == name)
                log = open(os.path.join(n["dir"], "notice.log")).read()[-3000:] \
                    if os.path.exists(os.path.join(n["dir"], "notice.log")) else ""
                raise RuntimeError(f"{name} exited rc={p.returncode}\n{log}")

    ctl = None
    cookie = os.path.join(client["dir"], "control_auth_cookie")
    while ctl is None:
        check_alive()
        if time.monotonic() - t_launch > 30:
            raise RuntimeError("client control port never came up")
        try:
            if os.path.exists(cookie):
                ctl = Control(client["ctl"], cookie)
        except OSError:
            time.sleep(0.1)
        else:
            if ctl is None:
                time.sleep(0.1)

    while True:
        check_alive()
        phase = ctl.getinfo("status/bootstrap-phase")
        prog = int(re.search(r"PROGRESS=(\d+)", phase).group(1))
        if prog >= 100:
            break
        if time.monotonic() - t_launch > BOOTSTRAP_TIMEOUT:
            raise RuntimeError(f"client did not bootstrap: {phase}")
        time.sleep(0.1)
    t_boot = time.monotonic() - t_launch
    out("tor.bootstrap_s", f"{t_boot:.1f}")

    # wait until the client's consensus lists every relay as Running
    # (bootstrap 100% can happen with only part of the network known)
    relays_fp = {n["fp"]: n for n in nodes}
    while True:
        check_alive()
        ns = ctl.getinfo("ns/all")
        running, exits = set(), set()
        fp = None
        for line in ns.splitlines():
            if line.startswith("r "):
                ident = line.split()[2]
                fp = base64.b64decode(ident + "=" * (-len(ident) % 4)).hex().upper()
            elif line.startswith("s ") and fp:
                flags = line.split()[1:]
                if "Running" in flags and "Valid" in flags:
                    running.add(fp)
                    if "Exit" in flags:
                        exits.add(fp)
        if set(relays_fp) <= running and {f for f, n in relays_fp.items() if n["role"] == "exit"} <= exits:
            break
        if time.monotonic() - t_launch > BOOTSTRAP_TIMEOUT:
            raise RuntimeError(f"consensus incomplete: {len(running)} running, {len(exits)} exits")
        time.sleep(0.5)
    out("tor.full_consensus_s", f"{time.monotonic() - t_launch:.1f}")
    # and until it has a descriptor for every relay
    while True:
        missing = []
        for f in relays_fp:
            try:
                if not ctl.getinfo(f"desc/id/{f}"):
                    missing.append(f)
            except RuntimeError:
                missing.append(f)
        if not missing:
            break
        if time.monotonic() - t_launch > BOOTSTRAP_TIMEOUT:
            raise RuntimeError(f"missing descriptors for {missing}")
        time.sleep(0.5)

    # ------------------------------------------------------ the onion service
    t_service = time.monotonic()
    p = subprocess.Popen([TOR, "-f", service["torrc"], "--defaults-torrc", "/dev/null"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(service["dir"], "stderr.log"), "w"))
    service["pid"] = p.pid
    children.append(("service", p))
    svc_cookie = os.path.join(service["dir"], "control_auth_cookie")
    svc = None
    while svc is None:
        check_alive()
        if time.monotonic() - t_service > 30:
            raise RuntimeError("service control port never came up")
        try:
            if os.path.exists(svc_cookie):
                svc = Control(service["ctl"], svc_cookie)
        except OSError:
            pass
        if svc is None:
            time.sleep(0.1)
    svc.cmd("SETEVENTS HS_DESC")
    while True:
        check_alive()
        if time.monotonic() - t_service > BOOTSTRAP_TIMEOUT:
            raise RuntimeError("the onion service never uploaded a descriptor")
        ev = svc.next_event(5)
        if ev and " HS_DESC UPLOADED " in ev:
            break
    out("tor.hs_publish_s", f"{time.monotonic() - t_service:.1f}")
    onion = open(os.path.join(hs_dir, "hostname")).read().strip()

    # ------------------------------------------------------ circuit builds
    ctl.cmd("SETEVENTS CIRC")
    exit_fps = [n["fp"] for n in nodes if n["role"] == "exit"]
    all_fps = [n["fp"] for n in nodes]
    rng = random.Random(1)

    def build_circuits(paths, gap_s):
        """EXTENDCIRCUIT each path; time from command to BUILT (wall clock)."""
        build_ms, hop_ms, built, failed = [], [], [], 0
        for g, m, ex in paths:
            t0 = time.monotonic()
            r = ctl.cmd(f"EXTENDCIRCUIT 0 ${g},${m},${ex}")
            cid = r[-1][1].split()[1]
            status, marks = None, []
            while status is None:
                ev = ctl.next_event(30)
                if ev is None:
                    continue
                parts = ev.split()
                if len(parts) >= 4 and parts[1] == "CIRC" and parts[2] == cid:
                    if parts[3] == "EXTENDED":
                        marks.append(time.monotonic())
                    if parts[3] in ("BUILT", "FAILED", "CLOSED"):
                        status = parts[3]
            if status == "BUILT":
                build_ms.append((time.monotonic() - t0) * 1000)
                if len(marks) == 3:
                    hop_ms.append([(b - a) * 1000 for a, b in zip([t0] + marks[:2], marks)])
                built.append(cid)
            else:
                failed += 1
            # Let the links go idle before the next build: tor leaves Nagle
            # on, so a CREATE right behind other cells can wait for a
            # delayed ACK (~40 ms on loopback).
            time.sleep(gap_s)
        for cid in built:
            ctl.cmd(f"CLOSECIRCUIT {cid}")
        time.sleep(gap_s)
        return build_ms, hop_ms, failed

    # pass 1 ("cold"): one circuit per ordered (guard, middle) pair, which
    # opens every client->relay and relay->relay TLS link on first use
    cold_paths = []
    for g in all_fps:
        for m in all_fps:
            if m != g:
                cold_paths.append((g, m, rng.choice([e for e in exit_fps if e not in (g, m)])))
    rng.shuffle(cold_paths)
    cold_ms, _, cold_failed = build_circuits(cold_paths, 0.1)
    # pass 2 ("warm"): CIRC_N random 3-hop paths over already-open links,
    # which is the usual case for a client with a live guard
    warm_paths = []
    for _ in range(CIRC_N):
        ex = rng.choice(exit_fps)
        g, m = rng.sample([f for f in all_fps if f != ex], 2)
        warm_paths.append((g, m, ex))
    build_ms, hop_ms, failed = build_circuits(warm_paths, 0.25)
    ctl.cmd("SETEVENTS")
    ctl.events.clear()
    out("tor.circ_build_ms_median", f"{median(build_ms):.2f}")
    out("tor.circ_build_ms_p90", f"{pctl(build_ms, 0.9):.2f}")
    out("tor.circ_build_ms_min", f"{min(build_ms):.2f}")
    out("tor.circ_build_ms_max", f"{max(build_ms):.2f}")
    out("tor.circ_build_n", f"{len(build_ms)} ok, {failed} failed")
    if hop_ms:
        out("tor.circ_hop_ms_median",
            ",".join(f"{median([h[i] for h in hop_ms]):.2f}" for i in range(3)))
    out("tor.circ_build_cold_ms_median", f"{median(cold_ms):.2f}")
    out("tor.circ_build_cold_ms_max", f"{max(cold_ms):.2f}")
    out("tor.circ_build_cold_n", f"{len(cold_ms)} ok, {cold_failed} failed")

    # ---------------------------------------------------------- HTTP server
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "bulk.bin"), "wb") as f:
        for _ in range(BULK_MIB):
            f.write(os.urandom(1 << 20))
    with open(os.path.join(www, "small.bin"), "wb") as f:
        f.write(os.urandom(1024))
    httpd = subprocess.Popen([sys.executable, "-m", "http.server", str(http_port),
                              "--bind", "127.0.0.1", "--directory", www],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    children.append(("httpd", httpd))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)

    def curl(path, via_tor, isolate=None):
        cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "120",
               "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"]
        if via_tor:
            cmd += ["--socks5-hostname", f"127.0.0.1:{client['socks']}"]
            if isolate:   # distinct SOCKS credentials => a fresh circuit (IsolateSOCKSAuth)
                cmd += ["--proxy-user", f"{isolate}:x"]
        cmd.append(f"http://127.0.0.1:{http_port}/{path}")
        r = subprocess.run(cmd, capture_output=True, text=True, env=CURL_ENV)
        code, ttfb, total, size = r.stdout.split()
        if code != "200":
            raise RuntimeError(f"curl {path} via_tor={via_tor}: {r.stdout} {r.stderr}")
        return float(ttfb), float(total), int(size)

    tor_pids = [(n["nick"], n["pid"]) for n in nodes + [client]]

    def bulk(via_tor, runs):
        mbps, cpu, by_node = [], [], []
        for i in range(runs):
            before = {nick: cpu_ticks(pid) for nick, pid in tor_pids}
            ttfb, total, size = curl("bulk.bin", via_tor, isolate=f"bulk{i}")
            after = {nick: cpu_ticks(pid) for nick, pid in tor_pids}
            assert size == BULK_MIB << 20
            mbps.append(size / total / 1e6)
            d = {k: (after[k] - before[k]) / CLK_TCK for k in before}
            cpu.append((sum(d.values()), total))
            by_node.append(d)
        return mbps, cpu, by_node

    def small(via_tor, runs):
        curl("small.bin", via_tor)          # warm-up (not counted)
        res = [curl("small.bin", via_tor) for _ in range(runs)]
        return [r[0] * 1000 for r in res], [r[1] * 1000 for r in res]

    def curl_onion(path, isolate):
        cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "120",
               "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
               "--socks5-hostname", f"127.0.0.1:{client['socks']}", "--proxy-user", f"{isolate}:x",
               f"http://{onion}/{path}"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=CURL_ENV)
        code, ttfb, total, size = r.stdout.split()
        if code != "200":
            raise RuntimeError(f"curl onion {path}: {r.stdout} {r.stderr}")
        return float(ttfb), float(total), int(size)

    # the onion service: first connections (caches emptied by NEWNYM: Tor rate-limits NEWNYM to
    # one per 10 s, so wait that long between runs), then small and bulk over the joined circuit
    hs_first = []
    for i in range(HS_FIRST_RUNS):
        ctl.cmd("SIGNAL NEWNYM")
        time.sleep(10.5)
        hs_first.append(curl_onion("small.bin", f"first{i}")[0] * 1000)
    out("tor.hs_first_ttfb_ms", f"{median(hs_first):.1f}")
    out("tor.hs_first_ttfb_ms_runs", ",".join(f"{x:.1f}" for x in hs_first))
    hs_small = [curl_onion("small.bin", "warm")[0] * 1000 for _ in range(SMALL_RUNS)]
    out("tor.hs_small_ttfb_ms", f"{median(hs_small):.2f}")
    hs_bulk = []
    for i in range(BULK_RUNS):
        ttfb, total, size = curl_onion("bulk.bin", "warm")
        assert size == BULK_MIB << 20
        hs_bulk.append(size / total / 1e6)
    out("tor.hs_bulk_MBps", f"{median(hs_bulk):.1f}")
    out("tor.hs_bulk_MBps_runs", ",".join(f"{x:.1f}" for x in hs_bulk))
    if SKIP_EXIT_BENCH:
        raise SystemExit(0)

    # warm-up through tor, then measure
    curl("small.bin", True)
    t_mbps, t_cpu, t_by = bulk(True, BULK_RUNS)
    d_mbps, d_cpu, _ = bulk(False, BULK_RUNS)
    t_ttfb, t_tot = small(True, SMALL_RUNS)
    d_ttfb, d_tot = small(False, SMALL_RUNS)

    out("tor.bulk_MBps", f"{median(t_mbps):.1f}")
    out("tor.bulk_MBps_runs", ",".join(f"{x:.1f}" for x in t_mbps))
    out("direct.bulk_MBps", f"{median(d_mbps):.1f}")
    out("direct.bulk_MBps_runs", ",".join(f"{x:.1f}" for x in d_mbps))
    out("tor.small_ttfb_ms", f"{median(t_ttfb):.2f}")
    out("tor.small_total_ms", f"{median(t_tot):.2f}")
    out("tor.small_total_ms_p90", f"{pctl(t_tot, 0.9):.2f}")
    out("direct.small_ttfb_ms", f"{median(d_ttfb):.2f}")
    out("direct.small_total_ms", f"{median(d_tot):.2f}")
    cpu_s = median([c for c, _ in t_cpu])
    wall_s = median([w for _, w in t_cpu])
    out("tor.bulk_cpu_s", f"{cpu_s:.2f}")
    out("tor.bulk_cpu_s_per_MB", f"{cpu_s / (BULK_MIB * 1.048576):.4f}")
    out("tor.bulk_cpu_util_cores", f"{cpu_s / wall_s:.2f}")
    # which processes burned the CPU (median per node over the runs)
    per = {k: median([d[k] for d in t_by]) for k in t_by[0]}
    out("tor.bulk_cpu_s_by_node",
        " ".join(f"{k}={v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0))
    out("net.cores", os.cpu_count())
    out("net.wall_s", f"{time.monotonic() - T_SCRIPT0:.1f}")
    rc = 0
except Exception as e:
    print(f"# ERROR: {e}", file=sys.stderr, flush=True)
    rc = 1
finally:
    teardown()
sys.exit(rc)
PYEOF
