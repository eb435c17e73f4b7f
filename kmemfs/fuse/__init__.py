"""What runs inside the daemon: the thin pyfuse3 adapter (ops), mounting and the trio main loop
(daemon), and saving/restoring the model (state)."""
