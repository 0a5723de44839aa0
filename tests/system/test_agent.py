"""The agent's start-up: bad configuration ends with one line naming the
problem, exit status 1, and nothing half-made left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, root
from uvxlan import netlink
from uvxlan.lab.netns import Lab

pytestmark = root


def agent(lab: Lab, host: str, cfg: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "agent.toml"
    path.write_text(cfg)
    return lab.run(lab.host(host).netns,
                   [sys.executable, "-m", "uvxlan", "agent", "--config", str(path)],
                   timeout=20)


def host_cfg(lab: Lab, tmp_path: Path, port: int = 4789) -> str:
    return (f'[host]\nname = "{lab.name}"\nunderlay = "{lab.host("h1").underlay_ip}"\n'
            f'port = {port}\ncontrol_dir = "{tmp_path}"\n')


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvxlan: error: "), done.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize(
    ("network", "endpoint", "words"),
    [
        ('name = "n"\nvni = 0', "", ["vni", "0 is outside 1..16777215"]),
        ('name = "n"\nvni = 16777216', "", ["16777216 is outside"]),
        ('name = "n"\nvni = 5', 'network = "n"\nnetns = "NS"\naddress = "10.0.0.1"',
         ["needs a prefix length"]),
        ('name = "n"\nvni = 5', 'network = "x"\nnetns = "NS"\naddress = "10.0.0.1/24"',
         ["no network named 'x'"]),
    ],
)
def test_bad_config_is_one_line(lab: Lab, tmp_path: Path, network: str, endpoint: str,
                                words: list[str]) -> None:
    lab.up(1)
    ns = lab.add_container("c1")
    cfg = host_cfg(lab, tmp_path) + f"[[network]]\n{network}\n"
    if endpoint:
        cfg += "[[endpoint]]\n" + endpoint.replace('"NS"', f'"{ns}"') + "\n"
    one_line_error(agent(lab, "h1", cfg, tmp_path), *words)
    assert not netlink.link_index("eth0", netns=ns)


def test_duplicate_mac_and_ip_in_a_network(lab: Lab, tmp_path: Path) -> None:
    lab.up(1)
    a, b = lab.add_container("c1"), lab.add_container("c2")
    base = host_cfg(lab, tmp_path) + '[[network]]\nname = "n"\nvni = 5\n'
    ep = '[[endpoint]]\nnetwork = "n"\nnetns = "{ns}"\naddress = "{ip}"\n'
    dup_ip = base + ep.format(ns=a, ip="10.0.0.1/24") + ep.format(ns=b, ip="10.0.0.1/24")
    one_line_error(agent(lab, "h1", dup_ip, tmp_path), "10.0.0.1 is used twice")
    dup_mac = (base + ep.format(ns=a, ip="10.0.0.1/24") + 'mac = "02:00:00:00:00:01"\n'
               + ep.format(ns=b, ip="10.0.0.2/24") + 'mac = "02:00:00:00:00:01"\n')
    one_line_error(agent(lab, "h1", dup_mac, tmp_path), "02:00:00:00:00:01 is used twice")
    assert not netlink.link_index("eth0", netns=a)
    assert not netlink.link_index("eth0", netns=b)


def test_port_in_use(lab: Lab, tmp_path: Path) -> None:
    lab.up(1)
    ns = lab.add_container("c1")
    h1 = lab.host("h1")
    holder = lab.spawn(h1.netns, [sys.executable, "-c",
                                  "import socket, sys, time\n"
                                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                  f"s.bind(('{h1.underlay_ip}', 4789))\n"
                                  "print('bound', flush=True)\ntime.sleep(60)\n"],
                       stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        cfg = (host_cfg(lab, tmp_path) + '[[network]]\nname = "n"\nvni = 5\n'
               f'[[endpoint]]\nnetwork = "n"\nnetns = "{ns}"\naddress = "10.0.0.1/24"\n')
        one_line_error(agent(lab, "h1", cfg, tmp_path), "UDP port 4789", "in use")
        assert not netlink.link_index("eth0", netns=ns)
    finally:
        holder.kill()
        holder.wait(5)


def test_failure_after_endpoints_were_made_removes_them(lab: Lab, tmp_path: Path) -> None:
    """The second endpoint's gateway is off its subnet: the route fails after
    both TAPs exist, and the agent must remove both."""
    lab.up(1)
    a, b = lab.add_container("c1"), lab.add_container("c2")
    cfg = (host_cfg(lab, tmp_path) + '[[network]]\nname = "n"\nvni = 5\n'
           f'[[endpoint]]\nnetwork = "n"\nnetns = "{a}"\naddress = "10.0.0.1/24"\n'
           f'[[endpoint]]\nnetwork = "n"\nnetns = "{b}"\naddress = "10.0.0.2/24"\n'
           'gateway = "192.0.2.1"\n')
    done = agent(lab, "h1", cfg, tmp_path)
    one_line_error(done, "192.0.2.1")
    assert not netlink.link_index("eth0", netns=a)
    assert not netlink.link_index("eth0", netns=b)


def test_cli_help_and_unknown_command() -> None:
    out = subprocess.run([sys.executable, "-m", "uvxlan", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "lab" in out.stdout and "agent" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "uvxlan", "frobnicate"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "uvxlan", "agent", "--config",
                              "/nonexistent/uvxlan.toml"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "uvxlan: error: /nonexistent/uvxlan.toml: no such file"


def test_agent_commands_without_a_running_agent_say_so_in_one_line(tmp_path: Path) -> None:
    for argv in (["stats"], ["fdb", "show"], ["stats", "--agent", str(tmp_path / "x.sock")]):
        done = subprocess.run([sys.executable, "-m", "uvxlan", *argv],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1, argv
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("uvxlan: error: "), done.stderr
        assert "agent" in lines[0]


def test_agent_without_config_needs_name_and_address() -> None:
    done = subprocess.run([sys.executable, "-m", "uvxlan", "agent", "--name", "h1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == "uvxlan: error: agent: --advertise is required without --config"
    bad = subprocess.run([sys.executable, "-m", "uvxlan", "agent", "--name", "h1",
                          "--advertise", "10.0.0.1", "--store", "redis://x"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "store URL" in bad.stderr


def test_cpus_must_exist(lab: Lab, tmp_path: Path) -> None:
    lab.up(1)
    cfg = host_cfg(lab, tmp_path) + "cpus = [0, 4096]\n"
    one_line_error(agent(lab, "h1", cfg, tmp_path), "cpus", "CPU 4096 is not available")
    cfg = host_cfg(lab, tmp_path) + 'cpus = ["first"]\n'
    one_line_error(agent(lab, "h1", cfg, tmp_path), "cpus", "not a list of CPU numbers")


def test_cpus_pin_every_agent_thread(overlay: OverlayFactory) -> None:
    """With cpus = [0], the agent and its datapath threads run on CPU 0
    only, and traffic still flows.  (The fixture checks both agents exit 0.)"""
    from tests.conftest import ping
    from uvxlan.lab.overlay import Placement

    ov = overlay({"net": 42}, [Placement("c1", "h1", "net", "10.0.0.1/24"),
                               Placement("c2", "h2", "net", "10.0.0.2/24")],
                 host_options={"cpus": [0]})
    lab = ov.lab
    assert ping(lab, lab.container_netns("c1"), "10.0.0.2") == 3
    # The TAP's queue is the agent's default tap_queue, not the kernel's 1000.
    link = lab.run(lab.container_netns("c1"), ["ip", "link", "show", "eth0"]).stdout
    assert "qlen 10000" in link, link
    proc = ov.proc("h1")
    assert proc is not None
    tasks = list(Path(f"/proc/{proc.pid}/task").iterdir())
    masks = set()
    for t in tasks:
        status = (t / "status").read_text()
        masks.add(next(ln.split()[1] for ln in status.splitlines()
                       if ln.startswith("Cpus_allowed_list:")))
    assert len(tasks) >= 3                 # main, and the TX and RX threads
    assert masks == {"0"}, masks
