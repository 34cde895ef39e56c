"""gilab.machine: every benchmark JSON names the CPU model (the project's two machine kinds differ 2-3x)."""

from pathlib import Path

import torch

from gilab import machine


def test_cpu_name_reads_the_model_name(monkeypatch):
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: cpuinfo)
    assert machine.cpu_name() == "AMD EPYC"


def test_cpu_name_falls_back_without_cpuinfo(monkeypatch):
    def missing(self, *a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(Path, "read_text", missing)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "arm64")
    assert machine.cpu_name() == "arm64"


def test_describe_names_cpu_cores_and_torch():
    line = machine.describe()
    assert line.startswith(machine.cpu_name()) and "cores" in line and torch.__version__ in line
