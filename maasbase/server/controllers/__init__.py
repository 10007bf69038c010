"""Reconcile loops: level-triggered, each step isolated, every failure logged and retried."""
