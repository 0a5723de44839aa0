"""``uvxlan bench``: uvxlan in each offload mode beside Linux's kernel vxlan
and the bare underlay, in one run, on the same kind of lab.

Each variant gets a fresh lab (two hosts, one container each, underlay
MTU 1500) and is measured the same way:

- ping RTT p50/p99 (µs), pings at 5 ms intervals on an idle path;
- iperf3 TCP, 1 stream and 4 streams (Gbit/s received, retransmits);
- CPU seconds the uvxlan agents used per gigabit moved (both TCP runs);
- 64-byte UDP payloads from container 1 to container 2 at one offered rate
  for every variant (benchmarks/tools/udpblast.c, paced ``sendmmsg``), counted
  by sequence number on the receiver (udpsink.c, ``recvmmsg``): packets per
  second received and loss %.  The offered rate is what the kernel vxlan
  carries unpaced in the same run (measured first), unless ``--pps`` fixes it.
  Each variant also gets an unpaced run: the most packets its path delivers.

Results go to benchmarks/results/ (or ``--out``) as JSON, a markdown table
with each figure's ratio to the kernel vxlan and a PNG chart; ``--publish``
copies them to docs/perf/, which the README shows.  The machine is noisy:
each figure is the median of ``--repeat`` rounds, and rounds interleave the
variants so drift hits them alike.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvxlan.errors import BenchError
from uvxlan.lab.kvxlan import kernel_vxlan_host
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import Overlay, Placement
from uvxlan.proto import PORT_IANA

VNI = 4242
SERVER_IP = "10.0.0.2"
CLIENT_IP = "10.0.0.1"
UDP_PORT = 9000
UDP_PAYLOAD = 64
FALLBACK_PPS = 200_000          # offered rate when no kernel-vxlan run sets it
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
PUBLISH = REPO / "docs" / "perf"
TOOLS = REPO / "benchmarks" / "tools"
TOOLS_BUILD = TOOLS / "build"   # gitignored (build/)
KERNEL = "kernel-vxlan"
ALIASES = {"uvxlan": "uvxlan-auto"}


@dataclass
class Variant:
    name: str
    build: Callable[[Lab, Path], Overlay | None]
    target: str = SERVER_IP      # what the client reaches
    agents: bool = False         # uvxlan agents whose CPU time is counted


@dataclass
class Result:
    variant: str
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        vals = [v for v in self.figures.get(key, []) if not math.isnan(v)]
        return statistics.median(vals) if vals else None

    def medians(self) -> dict[str, float]:
        out = {}
        for key in self.figures:
            m = self.median(key)
            if m is not None:
                out[key] = m
        return out


# --- variants -----------------------------------------------------------------

def _uvxlan(offload: str, **options: Any) -> Callable[[Lab, Path], Overlay]:
    """Two hosts, c1 on h1 and c2 on h2, agents with this offload mode and
    any further [host] options."""
    def build(lab: Lab, workdir: Path) -> Overlay:
        lab.up(2)
        lab.add_container("c1")
        lab.add_container("c2")
        ov = Overlay(lab, workdir, {"net": VNI},
                     [Placement("c1", "h1", "net", f"{CLIENT_IP}/24"),
                      Placement("c2", "h2", "net", f"{SERVER_IP}/24")],
                     hosts=["h1", "h2"], host_options={"offload": offload, **options})
        ov.start_all()
        return ov
    return build


def _kernel(lab: Lab, workdir: Path) -> None:
    lab.up(2)
    for i, (c, ip) in enumerate((("c1", CLIENT_IP), ("c2", SERVER_IP))):
        lab.add_container(c)
        me, peer = f"h{i + 1}", f"h{2 - i}"
        kernel_vxlan_host(lab, me, vni=VNI, port=PORT_IANA,
                          peers=[lab.host(peer).underlay_ip], container=c,
                          address=f"{ip}/24")


def _underlay(lab: Lab, workdir: Path) -> None:
    lab.up(2)


VARIANTS = {
    "uvxlan-auto": Variant("uvxlan-auto", _uvxlan("auto"), agents=True),
    "uvxlan-off": Variant("uvxlan-off", _uvxlan("off"), agents=True),
    "uvxlan-none": Variant("uvxlan-none", _uvxlan("none"), agents=True),
    KERNEL: Variant(KERNEL, _kernel),
    "underlay": Variant("underlay", _underlay, target="10.77.0.2"),
}
CHOICES = [*VARIANTS, *ALIASES]


def resolve_variants(names: list[str]) -> list[str]:
    """Canonical names, aliases resolved, duplicates dropped, order kept."""
    out: list[str] = []
    for n in names:
        n = ALIASES.get(n, n)
        if n not in VARIANTS:
            raise BenchError(f"unknown variant {n!r}: use {', '.join(CHOICES)}")
        if n not in out:
            out.append(n)
    return out


def _endpoints(lab: Lab, variant: Variant) -> tuple[str, str]:
    if variant.name == "underlay":
        return lab.host("h1").netns, lab.host("h2").netns
    return lab.container_netns("c1"), lab.container_netns("c2")


# --- small computations (unit-tested) ---------------------------------------

def percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_vals:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_vals)))
    return sorted_vals[min(rank, len(sorted_vals)) - 1]


def loss_pct(sent: int, received: int) -> float:
    """Share of sent datagrams that never arrived; 0 if nothing was sent."""
    if sent <= 0:
        return 0.0
    return 100.0 * max(0, sent - received) / sent


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0 or math.isnan(base):
        return None
    return value / base


def offered_rate(unpaced_pps: float) -> int:
    """Round a measured rate down to 10 kpps so the offered rate reads clean."""
    return max(10_000, int(unpaced_pps // 10_000) * 10_000)


# --- tools --------------------------------------------------------------------

def build_tools(build_dir: Path = TOOLS_BUILD,
                names: tuple[str, ...] = ("udpblast", "udpsink")) -> dict[str, Path]:
    """Compile benchmarks/tools/NAME.c (gcc -O2) unless up to date; their paths."""
    out = {}
    for name in names:
        src, exe = TOOLS / f"{name}.c", build_dir / name
        out[name] = exe
        if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
            continue
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise BenchError("the benchmarks compile benchmarks/tools/*.c "
                             "at run time and need gcc: install gcc")
        build_dir.mkdir(parents=True, exist_ok=True)
        tmp = build_dir / f".{name}.{os.getpid()}"   # others may build at once
        done = subprocess.run([gcc, "-O2", "-Wall", "-pthread", "-o", str(tmp), str(src)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            first = (done.stderr.strip().splitlines() or ["?"])[0]
            raise BenchError(f"gcc failed on {src.name}: {first}")
        tmp.replace(exe)
    return out


# --- measurements -------------------------------------------------------------

def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime + stime, all threads
    return total / os.sysconf("SC_CLK_TCK")


IPERF_PORT = 5201               # iperf3's own default


def iperf_server(lab: Lab, netns: str, address: str, *, once: bool = True,
                 timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """iperf3 -s on address in netns, returned once it listens (a client
    started before that is refused, which a loaded machine makes likely)."""
    server = lab.spawn(netns, ["iperf3", "-s", *(["-1"] if once else []), "-B", address],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not lab.run(netns, ["ss", "-Hltn", "src", f"{address}:{IPERF_PORT}"],
                      timeout=10).stdout.strip() or server.poll() is not None:
        if server.poll() is not None or time.monotonic() > deadline:
            terminate(server)
            raise BenchError(f"iperf3 -s on {address} did not listen within {timeout:.0f} s")
        time.sleep(0.05)
    return server


def iperf(lab: Lab, client_ns: str, server_ns: str, target: str,
          seconds: float, streams: int) -> dict[str, Any]:
    """One iperf3 TCP run from client_ns to a server on target: its JSON."""
    server = iperf_server(lab, server_ns, target)
    try:
        done = lab.run(client_ns, ["iperf3", "-c", target, "-t", str(seconds),
                                   "-P", str(streams), "-J"], timeout=seconds + 30)
        try:
            data: dict[str, Any] = json.loads(done.stdout or "{}")
        except json.JSONDecodeError:
            data = {}
        if "error" in data or "end" not in data:
            why = data.get("error") or done.stderr.strip() or "no result"
            raise BenchError(f"iperf3 failed: {why}")
        return data
    finally:
        terminate(server)


def ping_rtts(lab: Lab, client_ns: str, target: str, count: int,
              prefix: Sequence[str] = ()) -> list[float]:
    """count pings 5 ms apart: the RTTs of those answered, in µs.  prefix
    runs ping under another command (e.g. taskset)."""
    done = lab.run(client_ns, [*prefix, "ping", "-n", "-c", str(count), "-i", "0.005", "-W", "1",
                               target], timeout=count * 0.05 + 20)
    rtts = []
    for line in done.stdout.splitlines():
        if "time=" in line:
            rtts.append(float(line.rsplit("time=", 1)[1].split()[0]) * 1000)
    return rtts


def _udp(lab: Lab, tools: dict[str, Path], client_ns: str, server_ns: str,
         target: str, pps: float, seconds: float) -> dict[str, Any]:
    """One udpblast -> udpsink run; the sink's and the sender's JSON merged."""
    sink = lab.spawn(server_ns, [str(tools["udpsink"]), target, str(UDP_PORT),
                                 str(seconds + 15), "500"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sink.stderr is not None
        ready, _, _ = select.select([sink.stderr], [], [], 10)
        if not ready or sink.stderr.readline().strip() != "ready":
            raise BenchError("udpsink did not start")
        done = lab.run(client_ns, [str(tools["udpblast"]), target, str(UDP_PORT),
                                   str(int(pps)), str(seconds)], timeout=seconds + 30)
        if done.returncode != 0:
            raise BenchError(f"udpblast failed: {done.stderr.strip()[:200]}")
        sent: dict[str, Any] = json.loads(done.stdout)
        out, err = sink.communicate(timeout=20)
        if sink.returncode != 0:
            raise BenchError(f"udpsink failed: {err.strip()[:200]}")
        got: dict[str, Any] = json.loads(out)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        raise BenchError(f"small-packet test failed: {exc}") from None
    finally:
        terminate(sink)
    return {**sent, **{f"rx_{k}": v for k, v in got.items()}}


@dataclass
class Settings:
    seconds: float
    pings: int
    pps: int | None                  # None: set it from kernel-vxlan's unpaced run
    tools: dict[str, Path]
    calibration: dict[str, Any] = field(default_factory=dict)


def teardown(lab: Lab, overlay: Overlay | None, workdir: Path | None = None) -> None:
    """Stop the overlay, remove the lab and the work directory.  Ctrl-C is
    ignored meanwhile: a second one must not leave namespaces behind."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if overlay is not None:
            overlay.stop_all()
        lab.down()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def _step(progress: Callable[[str, str | None], None], what: str) -> Iterator[list[str]]:
    """Print "what …" now and the figure after; the body appends the figure."""
    note: list[str] = []
    progress(f"{what} …", None)
    try:
        yield note
    except BaseException:
        progress("", "failed")
        raise
    progress("", " ".join(note))


def measure(variant: Variant, st: Settings,
            progress: Callable[[str, str | None], None]) -> Result:
    result = Result(variant.name)
    lab = Lab("b" + os.urandom(4).hex())
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-bench-"))
    ov = None
    try:
        with _step(progress, "lab up") as note:
            t0 = time.monotonic()
            ov = variant.build(lab, workdir)
            client, server = _endpoints(lab, variant)
            # Warm up ARP and (uvxlan) MAC learning before anything is timed.
            if not ping_rtts(lab, client, variant.target, 5):
                raise BenchError(f"{variant.name}: {variant.target} does not answer ping")
            note.append(f"{time.monotonic() - t0:.1f} s")
        pids = [p.pid for p in ov._procs.values()] if ov else []

        with _step(progress, f"ping ×{st.pings}") as note:
            rtts = sorted(ping_rtts(lab, client, variant.target, st.pings))
            if not rtts:
                raise BenchError(f"{variant.name}: every ping was lost")
            result.add("ping_p50_us", statistics.median(rtts))
            result.add("ping_p99_us", percentile(rtts, 99))
            result.add("ping_loss_pct", loss_pct(st.pings, len(rtts)))
            note.append(f"p50 {statistics.median(rtts):.0f} µs, "
                        f"p99 {percentile(rtts, 99):.0f} µs")

        cpu0, gbits = _cpu_seconds(pids), 0.0
        for streams, key in ((1, "tcp1"), (4, "tcp4")):
            label = "1 stream" if streams == 1 else f"{streams} streams"
            with _step(progress, f"iperf3 {label}") as note:
                data = iperf(lab, client, server, variant.target, st.seconds, streams)
                rx = data["end"]["sum_received"]
                result.add(f"{key}_gbps", rx["bits_per_second"] / 1e9)
                result.add(f"{key}_retrans",
                           float(data["end"]["sum_sent"].get("retransmits", 0)))
                gbits += rx["bytes"] * 8 / 1e9
                note.append(f"{rx['bits_per_second'] / 1e9:.2f} Gbit/s")
        if variant.agents and gbits > 0:
            cpu = _cpu_seconds(pids) - cpu0
            result.add("cpu_s_per_gbit", cpu / gbits)
            progress(f"agent CPU {cpu:.1f} s for {gbits:.1f} Gbit", "")

        def unpaced() -> float:
            # The path's own limit: the sender pushes as fast as sendmmsg returns.
            with _step(progress, "64 B UDP unpaced") as note:
                u = _udp(lab, st.tools, client, server, variant.target, 0, st.seconds)
                rate: float = u["rx_received"] / max(u["seconds"], u["rx_seconds"], 1e-9)
                result.add("udp64_max_kpps", rate / 1e3)
                result.add("udp64_max_sent_kpps", u["sent"] / u["seconds"] / 1e3)
                note.append(f"{rate / 1e3:.0f} kpps received "
                            f"(sent {u['sent'] / u['seconds'] / 1e3:.0f} kpps)")
            return rate

        if st.pps is None and variant.name == KERNEL:
            rate = unpaced()
            st.pps = offered_rate(rate)
            st.calibration = {"udp_kernel_unpaced_pps": rate}
            progress(f"offering {st.pps / 1e3:.0f} kpps of 64 B UDP to every variant", "")
        pps = st.pps if st.pps is not None else FALLBACK_PPS
        with _step(progress, f"64 B UDP at {pps / 1e3:.0f} kpps") as note:
            u = _udp(lab, st.tools, client, server, variant.target, pps, st.seconds)
            span = max(u["seconds"], u["rx_seconds"], 1e-9)
            result.add("udp64_kpps", u["rx_received"] / span / 1e3)
            result.add("udp64_loss_pct", loss_pct(u["sent"], u["rx_received"]))
            result.add("udp64_sent_kpps", u["sent"] / u["seconds"] / 1e3)
            result.add("udp64_offered_kpps", pps / 1e3)
            result.add("udp64_rcvbuf_drops", float(max(0, u["rx_rcvbuf_errors"])))
            note.append(f"{u['rx_received'] / span / 1e3:.0f} kpps received, "
                        f"loss {loss_pct(u['sent'], u['rx_received']):.1f} % "
                        f"(sent {u['sent'] / u['seconds'] / 1e3:.0f} kpps)")
        if "udp64_max_kpps" not in result.figures:
            unpaced()
    finally:
        teardown(lab, ov, workdir)
    return result


# --- output -------------------------------------------------------------------

# key, header, format, ratio to kernel-vxlan shown
COLUMNS = [
    ("tcp1_gbps", "TCP 1 stream Gbit/s", "{:.2f}", True),
    ("tcp4_gbps", "TCP 4 streams Gbit/s", "{:.2f}", True),
    ("udp64_kpps", "64 B UDP kpps rx", "{:.0f}", True),
    ("udp64_loss_pct", "64 B UDP loss %", "{:.1f}", False),
    ("udp64_max_kpps", "64 B UDP max kpps", "{:.0f}", True),
    ("ping_p50_us", "ping p50 µs", "{:.0f}", True),
    ("ping_p99_us", "ping p99 µs", "{:.0f}", True),
    ("cpu_s_per_gbit", "agent CPU s/Gbit", "{:.3f}", False),
]
FIGURES = [c[0] for c in COLUMNS]


def table(results: list[Result]) -> str:
    """Markdown: a row per variant, each figure with its ratio to kernel-vxlan."""
    kernel = next((r for r in results if r.variant == KERNEL), None)
    head = "| variant | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rows = [head, "|---|" + "---:|" * len(COLUMNS)]
    for r in results:
        cells = []
        for key, _, fmt, with_ratio in COLUMNS:
            v = r.median(key)
            if v is None:
                cells.append("–")
                continue
            cell = fmt.format(v)
            k = ratio(v, kernel.median(key)) if kernel and with_ratio else None
            if k is not None and r is not kernel:
                cell += f" ({k:.2f}×)"
            cells.append(cell)
        rows.append(f"| {r.variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def header(meta: dict[str, Any]) -> str:
    rate = meta["udp_offered_pps"]
    how = ("kernel-vxlan's unpaced rate in this run, rounded down"
           if meta["udp_rate_source"] == "kernel" else "fixed")
    return (f"`{meta['command']}` · {meta['date']} · Linux {meta['kernel']} · "
            f"{meta['cpus']} CPUs · median of {meta['repeat']} round(s), "
            f"{meta['seconds']:g} s per run · 64 B UDP offered at "
            f"{rate / 1e3:.0f} kpps ({how})")


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    note = ("Ratios are to kernel-vxlan in the same run (higher is better for "
            "Gbit/s and kpps, lower for ping)." if any(r.variant == KERNEL for r in results)
            else "No kernel-vxlan in this run, so no ratios.")
    note += (" 64 B UDP: packets received per second and loss (by sequence number) "
             "at the offered rate; max kpps: received with an unpaced sender.")
    return f"{header(meta)}\n\n{table(results)}\n\n{note}\n"


CHART = [("tcp1_gbps", "TCP 1 stream, Gbit/s"), ("tcp4_gbps", "TCP 4 streams, Gbit/s"),
         ("udp64_kpps", "64 B UDP at the offered rate, kpps"),
         ("udp64_max_kpps", "64 B UDP unpaced, kpps"), ("ping_p50_us", "ping p50, µs")]


def write_chart(results: list[Result], path: Path, title: str = "") -> None:
    """Bars per variant for each figure of CHART, one panel per figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.variant for r in results]
    colors = [f"C{i}" for i in range(len(names))]
    fig, axes = plt.subplots(1, len(CHART), figsize=(3.1 * len(CHART), 3.7))
    for ax, (key, label) in zip(axes, CHART, strict=True):
        vals = [r.median(key) or 0.0 for r in results]
        bars = ax.bar(range(len(names)), vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(y=0.15)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: list[Result], meta: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta,
           "results": {r.variant: {"median": r.medians(), "runs": r.figures}
                       for r in results}}
    paths = [out / "latest.json", out / "latest.md", out / "latest.png"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(markdown(results, meta))
    write_chart(results, paths[2],
                f"uvxlan bench · Linux {meta['kernel']} · {meta['cpus']} CPUs · "
                f"medians of {meta['repeat']}")
    return paths


def publish(paths: list[Path], dest: Path = PUBLISH) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in paths:
        shutil.copyfile(p, dest / p.name)
        copied.append(dest / p.name)
    return copied


def run(variants: list[str], seconds: float, repeat: int, pings: int, *,
        pps: int | None = None, out: Path = RESULTS, publish_to: Path | None = None,
        command: str = "uvxlan bench") -> int:
    if os.geteuid() != 0:
        raise BenchError("bench needs root (namespaces, TAP)")
    for tool in ("iperf3", "ping", "ip"):
        if shutil.which(tool) is None:
            raise BenchError(f"bench needs {tool}: install it")
    if seconds <= 0 or repeat < 1 or pings < 1:
        raise BenchError("--seconds, --repeat and --pings must be positive")
    if pps is not None and pps <= 0:
        raise BenchError("--pps must be positive")
    names = resolve_variants(variants)
    st = Settings(seconds, pings, pps, build_tools())
    results = {v: Result(v) for v in names}
    # kernel-vxlan first: its unpaced run sets the rate offered to the others.
    order = sorted(names, key=lambda v: v != KERNEL) if pps is None else names
    date = time.strftime("%Y-%m-%d %H:%M")

    for rep in range(repeat):
        for i, v in enumerate(order):
            tag = f"[{i + 1}/{len(order)}" + (f" r{rep + 1}/{repeat}]" if repeat > 1 else "]")

            def progress(msg: str, end: str | None, tag: str = tag, v: str = v) -> None:
                # end None: the step starts; otherwise it finished with this figure
                if end is None:
                    print(f"{tag} {v}: {msg}", end="", file=sys.stderr, flush=True)
                elif msg:
                    print(f"{tag} {v}: {msg}{end}", file=sys.stderr, flush=True)
                else:
                    print(f" {end}", file=sys.stderr, flush=True)

            r = measure(VARIANTS[v], st, progress)
            for key, vals in r.figures.items():
                for val in vals:
                    results[v].add(key, val)

    ordered = [results[v] for v in names]
    meta = {"date": date, "command": command, "seconds": seconds, "repeat": repeat,
            "pings": pings, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "variants": names,
            "udp_offered_pps": st.pps if st.pps is not None else FALLBACK_PPS,
            "udp_rate_source": ("fixed" if pps is not None or st.pps is None
                                else "kernel"),
            "udp_payload_bytes": UDP_PAYLOAD, **st.calibration}
    paths = write_outputs(ordered, meta, out)
    print(markdown(ordered, meta))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    if publish_to is not None:
        copied = publish(paths, publish_to)
        print("published " + ", ".join(str(p) for p in copied), file=sys.stderr)
    return 0


def command_line(args: Any) -> str:
    """The invocation, from parsed options, for the results' header."""
    words = ["uvxlan", "bench"]
    if args.quick:
        words.append("--quick")
    if args.variants != list(VARIANTS):
        words += ["--variants", *args.variants]
    for opt in ("seconds", "repeat", "pings", "pps"):
        val = getattr(args, opt)
        if val is not None:
            words += [f"--{opt}", f"{val:g}" if isinstance(val, float) else str(val)]
    if args.publish:
        words.append("--publish")
    return " ".join(words)


def main(args: Any) -> int:
    """``uvxlan bench`` from its parsed options (see uvxlan.cli)."""
    quick = bool(args.quick)
    try:
        return run(args.variants,
                   args.seconds if args.seconds is not None else (3 if quick else 10),
                   args.repeat if args.repeat is not None else (1 if quick else 3),
                   args.pings if args.pings is not None else (50 if quick else 200),
                   pps=args.pps, out=Path(args.out) if args.out else RESULTS,
                   publish_to=PUBLISH if args.publish else None,
                   command=command_line(args))
    except KeyboardInterrupt:
        print("\nuvxlan: interrupted; the lab was removed", file=sys.stderr)
        return 130
