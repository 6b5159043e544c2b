"""Model compression: layer densities, channel-group tracing, the width solver and architecture specs."""
