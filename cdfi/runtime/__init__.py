"""Where and how a model runs: device, precision and thread count, resolved once for every command."""
