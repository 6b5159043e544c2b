"""Sparsity-inducing optimisers used for CDFI's compression stage."""

from optimizers.obproxsg import OBProxSG, ProxSG

__all__ = ["OBProxSG", "ProxSG"]
