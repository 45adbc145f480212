"""Search: measuring candidate plans on the GPU and keeping the fastest."""
