"""The viewers and clients: they read a mounted tree (kmemfs or a kernel's cgroupfs) through
files only, never the engine: top, record/plot, the ctl client."""
