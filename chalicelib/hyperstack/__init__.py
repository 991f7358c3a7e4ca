"""Hyperstack GPU VMs for replicas. Importing this package is cheap: the SDK loads only with a client."""

from chalicelib.hyperstack.client import HyperstackClient, HyperstackError, Vm, VmSpec

__all__ = ["HyperstackClient", "HyperstackError", "Vm", "VmSpec"]
