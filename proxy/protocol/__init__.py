"""The PostgreSQL wire protocol (version 3.0): an I/O-free codec (``messages``) and
per-connection framing (``framing``). Nothing here touches a socket."""
