"""The published evaluation protocol: metrics, the evaluation loop, classical baselines and the test CLIs."""
