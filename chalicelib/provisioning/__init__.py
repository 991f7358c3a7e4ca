"""Provisioning: Hyperstack GPU VMs as replicas, driven by the Step Functions workflow in infra/."""
