#!/usr/bin/env python3
"""Generates the simulated GPU hosts in this folder (hwloc 2.x XML with I/O objects).

The CPU and memory part comes from hwloc itself (`lstopo-no-graphics --input <synthetic>`);
this script adds PCI trees (host bridges, PCIe switches, NVIDIA GPUs with CUDA/NVML OS devices,
Mellanox NICs with OpenFabrics and network OS devices) and an "NVLinkBandwidth" distances matrix.
It also writes the cluster files (cluster-*.json) that use them. Rerun after changing a layout:  python3 topology/data/gen_hosts.py topology/data

Layouts (GPU and NIC numbers are in PCI bus order, which is also the order below):
  h800x8-8nic.xml  2 packages x 2 PCIe switches; each switch has two leaf bridges, each leaf
                   holds GPU g and NIC g. 8 GPUs, 8 NICs, NVLink all-to-all (NVSwitch) 450 GB/s.
  h800x8-4nic.xml  2 packages x 2 PCIe switches; each switch has GPUs 2k, 2k+1 (one leaf bridge
                   each) and NIC k directly below it. 8 GPUs, 4 NICs, NVLink all-to-all.
  pcie4-numa.xml   2 packages, each with one switch holding 2 GPUs, and one NIC on its own host
                   bridge (no common PCI ancestor with any GPU, so the NUMA node decides). No NVLink.
"""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SYNTHETIC = "pack:2 [numa(memory=1TB)] core:8 pu:2"
GPU_PCI = "0302 [10de:2324] [10de:17a6] a1"  # H800 SXM5
NIC_PCI = "0207 [15b3:1021] [15b3:0041] 00"  # ConnectX-7
BRIDGE_PCI = "0604 [1000:c030] [0000:0000] b0"
GPU_MODEL = "NVIDIA H800 80GB HBM3"


class Builder:
    def __init__(self, root):
        self.next_gp = 1 + max(int(o.get("gp_index")) for o in root.iter("object"))
        self.gpu_osdevs = []

    def obj(self, parent, type_, **attrs):
        e = ET.SubElement(parent, "object", {"type": type_, **{k: str(v) for k, v in attrs.items()}})
        e.set("gp_index", str(self.next_gp))
        self.next_gp += 1
        return e

    def host_bridge(self, package, bus_lo, bus_hi):
        return self.obj(package, "Bridge", bridge_type="0-1", depth=0, bridge_pci=f"0000:[{bus_lo:02x}-{bus_hi:02x}]")

    def bridge(self, parent, busid, depth, bus_lo, bus_hi):
        return self.obj(parent, "Bridge", bridge_type="1-1", depth=depth, pci_busid=busid, pci_type=BRIDGE_PCI,
                        bridge_pci=f"0000:[{bus_lo:02x}-{bus_hi:02x}]", pci_link_speed="32.000000")

    def gpu(self, parent, g, bus):
        pci = self.obj(parent, "PCIDev", pci_busid=f"0000:{bus:02x}:00.0", pci_type=GPU_PCI, pci_link_speed="32.000000")
        cuda = self.obj(pci, "OSDev", name=f"cuda{g}", subtype="CUDA", osdev_type=5)
        for name, value in [("Backend", "CUDA"), ("GPUVendor", "NVIDIA Corporation"), ("GPUModel", GPU_MODEL),
                            ("CUDAGlobalMemorySize", "83397632"), ("CUDAMultiProcessors", "132")]:
            ET.SubElement(cuda, "info", name=name, value=value)
        nvml = self.obj(pci, "OSDev", name=f"nvml{g}", subtype="NVML", osdev_type=1)
        ET.SubElement(nvml, "info", name="GPUModel", value=GPU_MODEL)
        self.gpu_osdevs.append(cuda)

    def nic(self, parent, n, bus):
        pci = self.obj(parent, "PCIDev", pci_busid=f"0000:{bus:02x}:00.0", pci_type=NIC_PCI, pci_link_speed="32.000000")
        ib = self.obj(pci, "OSDev", name=f"mlx5_{n}", osdev_type=3)
        ET.SubElement(ib, "info", name="Port1State", value="4")
        ET.SubElement(ib, "info", name="Port1LID", value=f"0x{n + 1:x}")
        self.obj(pci, "OSDev", name=f"ibp{bus}s0", osdev_type=2)

    def nvlink_all_to_all(self, root, gbps):
        n = len(self.gpu_osdevs)
        if n == 0:
            return
        values = [0 if i == j else gbps for i in range(n) for j in range(n)]
        d = ET.SubElement(root, "distances2", type="OSDev", nbobjs=str(n), kind="10", name="NVLinkBandwidth",
                          indexing="gp")
        # hwloc wants each list as "v v v " with length = number of characters.
        for tag, items in [("indexes", [o.get("gp_index") for o in self.gpu_osdevs]), ("u64values", values)]:
            text = "".join(f"{v} " for v in items)
            ET.SubElement(d, tag, length=str(len(text))).text = text


def base_topology():
    xml = subprocess.run(["lstopo-no-graphics", "--input", SYNTHETIC, "--of", "xml", "-"], check=True,
                         capture_output=True, text=True).stdout
    root = ET.fromstring(xml)
    for info in root.iter("info"):
        if info.get("name") == "ProcessName":
            info.set("value", "gen_hosts.py")
    return root


def set_hostname(root, name):
    # hwloc wants an object's <info> children before its child objects.
    root[0].insert(0, ET.Element("info", name="HostName", value=name))


def packages(root):
    return [o for o in root.iter("object") if o.get("type") == "Package"]


def h800x8(nics_per_switch_leaf):
    root = base_topology()
    b = Builder(root)
    for p, pkg in enumerate(packages(root)):
        hb = b.host_bridge(pkg, 0x10 + 0x80 * p, 0x7f + 0x80 * p)
        for s in range(2):
            k = 2 * p + s  # switch number
            top = 0x10 + 0x80 * p + 0x20 * s
            sw = b.bridge(hb, f"0000:{top:02x}:00.0", 1, top + 1, top + 0x1f)
            for leaf in range(2):
                g = 2 * k + leaf
                lbus = top + 1 + 0x8 * leaf
                lb = b.bridge(sw, f"0000:{lbus:02x}:00.0", 2, lbus + 1, lbus + 2)
                b.gpu(lb, g, lbus + 1)
                if nics_per_switch_leaf:
                    b.nic(lb, g, lbus + 2)
            if not nics_per_switch_leaf:
                b.nic(sw, k, top + 0x1e)
    b.nvlink_all_to_all(root, 450)
    set_hostname(root, f"h800x8-{8 if nics_per_switch_leaf else 4}nic")
    return root


def pcie4_numa():
    root = base_topology()
    b = Builder(root)
    for p, pkg in enumerate(packages(root)):
        hb = b.host_bridge(pkg, 0x10 + 0x80 * p, 0x5f + 0x80 * p)
        top = 0x10 + 0x80 * p
        sw = b.bridge(hb, f"0000:{top:02x}:00.0", 1, top + 1, top + 0x1f)
        for leaf in range(2):
            lbus = top + 1 + 0x8 * leaf
            lb = b.bridge(sw, f"0000:{lbus:02x}:00.0", 2, lbus + 1, lbus + 1)
            b.gpu(lb, 2 * p + leaf, lbus + 1)
        nic_hb = b.host_bridge(pkg, 0x60 + 0x80 * p, 0x6f + 0x80 * p)
        b.nic(nic_hb, p, 0x61 + 0x80 * p)
    set_hostname(root, "pcie4-numa")
    return root


def write(root, path):
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE topology SYSTEM "hwloc2.dtd">\n' + body + "\n")


def write_cluster(path, comment, xml, hosts, gpus):
    """One rank per (host, gpu) in host-major order: ranks of a node are contiguous."""
    lines = [f'  "comment": "{comment}",', '  "hosts": [']
    lines += [f'    {{"name": "node{h}", "xml": "{xml}"}}' + ("," if h + 1 < hosts else "") for h in range(hosts)]
    lines += ['  ],', '  "ranks": [']
    ranks = [(h, g) for h in range(hosts) for g in gpus]
    lines += [f'    {{"host": "node{h}", "gpu": {g}}}' + ("," if i + 1 < len(ranks) else "") for i, (h, g) in enumerate(ranks)]
    lines += ['  ]']
    path.write_text("{\n" + "\n".join(lines) + "\n}\n")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    write(h800x8(True), out / "h800x8-8nic.xml")
    write(h800x8(False), out / "h800x8-4nic.xml")
    write(pcie4_numa(), out / "pcie4-numa.xml")
    write_cluster(out / "cluster-2x8-h800.json", "2 hosts x 8 H800, 8 NICs each; rank r on node r/8, GPU r%8",
                  "h800x8-8nic.xml", 2, range(8))
    write_cluster(out / "cluster-2x8-h800-4nic.json", "2 hosts x 8 H800, 4 NICs each (2 GPUs per NIC)",
                  "h800x8-4nic.xml", 2, range(8))
    write_cluster(out / "cluster-2x2-pcie.json", "2 hosts x 2 ranks on GPUs 0 and 2 (one per package), no NVLink",
                  "pcie4-numa.xml", 2, [0, 2])


if __name__ == "__main__":
    main()
