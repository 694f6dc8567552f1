"""Exports of a lab to engines that span several hosts: Kathará (and so Kubernetes through
Megalos) and containerlab. They read the model, the rendered configs and the lab's daemon
declarations; nothing here starts a process or builds a namespace.
"""
