"""MaaS-Base: GPU cluster manager and Model-as-a-Service platform."""

__version__ = "0.1.0"
