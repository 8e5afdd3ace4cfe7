"""Starts a real `rmq standalone` process for the Python client tests."""
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("RMQ_BIN_DIR", ROOT / "target" / "debug"))


def _slot():
    """Ten ports reserved with flock on a slot file, shared with the Rust harness."""
    d = Path(tempfile.gettempdir()) / "rmq-port-slots"
    d.mkdir(exist_ok=True)
    for i in range(400):
        f = open(d / f"slot-{i}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f, 21000 + i * 10
        except OSError:
            f.close()
    raise RuntimeError("no free port slot")


def _wait_port(port, proc, log):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rmq exited early:\n{Path(log).read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened:\n{Path(log).read_text()}")


class Server:
    def __init__(self):
        self.lock, self.base = _slot()
        self.dir = tempfile.mkdtemp(prefix="rmq-py-")
        self.log = os.path.join(self.dir, "rmq.log")
        args = [
            str(BIN_DIR / "rmq"), "standalone", "--bind", "127.0.0.1",
            "--namesrv-port", str(self.base), "--proxy-port", str(self.base + 3),
            "--metrics-port", str(self.base + 4), "--data-dir", os.path.join(self.dir, "data"),
            "--set", f"listenPort={self.base + 1}", "--set", "brokerIP1=127.0.0.1", "--set", "brokerName=broker-a",
        ]
        env = {k: v for k, v in os.environ.items() if k != "NAMESRV_ADDR"}
        self.proc = subprocess.Popen(args, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        _wait_port(self.base + 3, self.proc, self.log)
        _wait_port(self.base, self.proc, self.log)

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.base + 3}"

    def mqadmin(self, *args):
        out = subprocess.run([str(BIN_DIR / "mqadmin"), *args, "-n", f"127.0.0.1:{self.base}"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def create_topic(self, topic, *extra):
        self.mqadmin("updateTopic", "-c", "DefaultCluster", "-t", topic, *extra)
        self.wait_route(topic)

    def wait_route(self, topic, budget=20):
        deadline = time.time() + budget
        while time.time() < deadline:
            r = subprocess.run([str(BIN_DIR / "mqadmin"), "topicRoute", "-t", topic, "-n", f"127.0.0.1:{self.base}"],
                               capture_output=True, text=True)
            if r.returncode == 0 and "queueDatas" in r.stdout:
                return
            time.sleep(0.1)
        raise RuntimeError(f"route of {topic} never appeared")

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.lock.close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def topic(server):
    name = "Py" + uuid.uuid4().hex[:10]
    server.create_topic(name)
    return name
