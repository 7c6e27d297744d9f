"""Policies: YAML files validated against a schema and turned into frozen records."""

from .loader import load_policy, load_policy_text
from .model import FileMode, LogLevel, PathRule, Policy

__all__ = ["FileMode", "LogLevel", "PathRule", "Policy", "load_policy", "load_policy_text"]
