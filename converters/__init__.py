"""Container readers and writers: bytes on disk <-> named lazy tensors. No parameter names here."""
