"""Real workloads: capture a command's kernel slab activity (capture: the only module that
touches tracefs), the trace format and its parser, the host-to-3.4 cache-name mapping, replay
into the engine, and the series-vs-opt-in comparison."""
