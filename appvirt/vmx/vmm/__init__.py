"""The simulated VMM: KVM-style exit dispatch, handlers and the devices behind them."""
